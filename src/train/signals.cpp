#include "coe/train/signals.h"

#include "coe/util/error.h"

#include <cstring>

namespace coe {
namespace {

volatile std::sig_atomic_t g_received = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_received != 0) {
    // Second signal: no more patience. Default action (terminate) for this signal.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    raise(sig);
    return;
  }
  g_received = sig;
}

}  // namespace

StopSignalGuard::StopSignalGuard() {
  g_received = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGINT, &sa, &old_int_) != 0 || sigaction(SIGTERM, &sa, &old_term_) != 0)
    fail("cannot install SIGINT/SIGTERM handlers: {}", std::strerror(errno));
}

StopSignalGuard::~StopSignalGuard() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopSignalGuard::received() { return g_received; }

}  // namespace coe
