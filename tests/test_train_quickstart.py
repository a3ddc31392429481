"""The quick start runs end to end (tiny settings): data → training → export → SDK → mIoU."""
from train.quickstart import main


def test_quickstart_end_to_end(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--iters", "3", "--train", "6", "--val", "3", "--classes", "5",
                 "--unseen", "1"]) == 0
    out = capsys.readouterr().out
    assert "seen-class mIoU" in out and "random" in out
    assert (tmp_path / "run" / "model_final.pth").is_file()
    assert len(list((tmp_path / "examples").glob("example_*.png"))) == 3
