#pragma once
// Child processes without a shell. Configs, sweep files and datasets are shared between people,
// so no value read from them may reach /bin/sh: a child is an argument vector started with
// posix_spawn, its output redirected by file descriptor (docs/security.md).
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace coe {

// The absolute path of the executable `name` on $PATH (what the shell's `command -v` finds, found
// without a shell), or nullopt. Relative $PATH entries ("", ".", "bin") are skipped: the working
// directory may be a repository someone else wrote and must not supply programs. A name with a
// '/' is returned as given when it is an executable file.
std::optional<std::filesystem::path> find_executable(const std::string& name);

// Starts argv[0] (a path: look a bare name up with find_executable) with the arguments `argv`,
// stdin from /dev/null and, when `log` is not empty, stdout and stderr appended to `log`
// (created if needed); otherwise they are the caller's. Returns the child's pid. Throws a
// one-line coe::Error naming the program (or the log) and the errno text when it cannot start.
pid_t spawn_process(const std::vector<std::string>& argv, const std::filesystem::path& log = {});

// Waits for the child `pid`, retrying on EINTR; returns its exit status, 128 + N when signal N
// ended it.
int wait_process(pid_t pid);

// The exit status of the child `pid` (as wait_process) if it has ended, nullopt while it runs.
std::optional<int> try_wait_process(pid_t pid);

// spawn_process, then wait_process.
int run_process(const std::vector<std::string>& argv, const std::filesystem::path& log = {});

// gnuplot on $PATH (find_executable), or nullopt.
std::optional<std::filesystem::path> find_gnuplot();

// A script that ships with coe (the gnuplot scripts tools/plot_sweep.gp and tools/plot_run.gp,
// coe-tokfuzz's tools/hf_oracle.py): the path in the environment variable `env_var` when it is
// set (not checked: a missing file fails when the script runs; nullptr: no variable), else
// <directory of this executable>/../share/coe/<name> (an installation, or the build, which copies
// the scripts into its share/coe/), else the share/coe/ of the build the binary came from (its
// path compiled in), made absolute; nullopt when none exists. A script is a program (a gnuplot
// script may call system()), so it is never looked up in the working directory.
std::optional<std::filesystem::path> find_plot_script(const std::string& name, const char* env_var);

// Runs `gnuplot -c SCRIPT ARG...` with gnuplot's output appended to `log`: inside the script the
// arguments are the strings ARG1, ARG2, ... (ARGC of them), data that gnuplot never evaluates,
// unlike text given with `gnuplot -e`. Pass file names absolute: gnuplot reads a data file whose
// name starts with '<', and writes an output whose name starts with '|', through a shell.
// Returns gnuplot's exit status; throws when gnuplot is not installed or cannot start.
int run_gnuplot(const std::filesystem::path& script, const std::vector<std::string>& args,
                const std::filesystem::path& log);

// Moves a PNG that gnuplot drew into `drawn` (a temporary name in the directory of `target`) onto
// `target` when it is complete: on disk (synced), starting with the PNG signature and ending with
// the IEND chunk. gnuplot exits 0 after writing a truncated PNG when the disk is full (or the
// file size limit is reached), so its exit status does not tell. Otherwise `drawn` is removed, a
// previous `target` is left as it was, and the reason is returned, naming `target`
// ("<target>: truncated PNG (16384 bytes, no IEND chunk at the end: the disk may be full)").
// nullopt: installed.
std::optional<std::string> install_png(const std::filesystem::path& drawn, const std::filesystem::path& target);

}  // namespace coe
