#include "zk/parallel.h"

#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace zk {
namespace {

int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  if (const char* env = std::getenv("ZEGFORMER_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return available_cpus();
}

void run_threads(int threads, const std::function<void(int)>& body) {
  if (threads <= 1) {
    body(0);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  auto guarded = [&](int tid) {
    try {
      body(tid);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  int started = 1;
  try {
    workers.reserve(threads - 1);
    for (; started < threads; ++started) workers.emplace_back(guarded, started);
  } catch (const std::exception&) {
    // Could not start more threads: the caller runs the remaining workers itself.
  }
  guarded(0);
  for (int t = started; t < threads; ++t) guarded(t);
  for (auto& w : workers) w.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace zk
