// Minimal std::thread parallelism (no OpenMP runtime to clash with torch's).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>

namespace zk {

// Worker count: `requested` if > 0, else env ZEGFORMER_NUM_THREADS, else the CPUs this
// process may run on.
int resolve_threads(int requested);

// Runs body(tid) for tid in [0, threads) concurrently (the caller runs tid 0) and
// rethrows the first exception raised by any of them.
void run_threads(int threads, const std::function<void(int)>& body);

// Hands out chunks [begin, end) of [0, n) to the workers of run_threads.
class ChunkQueue {
 public:
  ChunkQueue(int64_t n, int64_t grain) : n_(n), grain_(grain < 1 ? 1 : grain) {}
  bool pop(int64_t& begin, int64_t& end) {
    begin = next_.fetch_add(grain_);
    if (begin >= n_) return false;
    end = begin + grain_ < n_ ? begin + grain_ : n_;
    return true;
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t n_, grain_;
};

// body(tid, begin, end) over dynamically scheduled chunks of [0, n).
template <class Body>
void parallel_chunks(int64_t n, int64_t grain, int threads, Body body) {
  if (n <= 0) return;
  const int64_t chunks = (n + grain - 1) / grain;
  const int used = static_cast<int>(chunks < threads ? chunks : threads);
  ChunkQueue queue(n, grain);
  run_threads(used, [&](int tid) {
    int64_t b, e;
    while (queue.pop(b, e)) body(tid, b, e);
  });
}

}  // namespace zk
