#pragma once
// Launching the ranks of a data-parallel job from a test, as torchrun would: each rank is a child
// process with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment.
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace coe::test {

// A TCP port that was free a moment ago (the kernel's choice for port 0 on 127.0.0.1).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) port = ntohs(addr.sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

struct RankProcess {
  pid_t pid = -1;
  std::filesystem::path log;
  int exit_code = -1;      // exit status, 128 + signal, or -1 while running / when it was killed by us
  double seconds = 0;      // from launch to exit
  bool timed_out = false;  // still running at the deadline (then SIGKILLed)

  std::string output() const {
    std::ifstream in(log);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
};

// Starts `args` with this process's environment plus `env`, stdout+stderr into `log`.
inline RankProcess spawn_process(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                                 const std::filesystem::path& log) {
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  // A parent launched by torchrun / Slurm must not leak its own rank into the children.
  for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_LOCALID", "SLURM_STEP_ID",
                        "SLURM_STEPID", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"})
    merged.erase(k);
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> kvs;
  for (const auto& [k, v] : merged) kvs.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& kv : kvs) envp.push_back(kv.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  RankProcess p;
  p.log = log;
  if (posix_spawn(&p.pid, argv[0], &actions, nullptr, argv.data(), envp.data()) != 0) p.pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return p;
}

// torchrun's variables for rank `rank` of `world` on this machine.
inline std::map<std::string, std::string> rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
}

// Waits for every process until `deadline_s` after the call; those still running are SIGKILLed and
// marked timed_out. With `primary` >= 0 the others are SIGKILLed (and marked) as soon as
// procs[primary] has exited.
inline void wait_all(std::vector<RankProcess>& procs, double deadline_s, int primary = -1) {
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  size_t running = 0;
  for (auto& p : procs) running += p.pid > 0;
  while (running > 0) {
    for (auto& p : procs) {
      if (p.pid <= 0 || p.exit_code != -1 || p.timed_out) continue;
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
        p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        p.seconds = elapsed();
        --running;
      }
    }
    if (running == 0) break;
    const bool primary_done = primary >= 0 && procs[primary].exit_code != -1;
    if (elapsed() > deadline_s || primary_done) {
      for (auto& p : procs) {
        if (p.pid <= 0 || p.exit_code != -1) continue;
        ::kill(p.pid, SIGKILL);
        ::waitpid(p.pid, nullptr, 0);
        p.timed_out = true;
        p.seconds = elapsed();
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace coe::test
