// Child processes without a shell (subprocess.h): arguments with shell syntax arrive as the
// strings they are and run nothing; $PATH lookup skips the working directory; gnuplot -c gets its
// arguments as data. Plus the JSON and YAML nesting caps (json_limits.h, config_reader.h), atomic
// writes that follow no planted symlink (file_io.h), and the marked scratch directories whose
// leftovers a later run may delete (scratch_dir.h).
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"
#include "coe/util/scratch_dir.h"
#include "coe/util/subprocess.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using coe::test::expect_error;
using coe::test::read_file;
using coe::test::scratch_dir;
using coe::test::write_file;

namespace {

// Shell syntax that runs `touch <marker>` in the working directory if any shell ever sees it.
const std::vector<std::string> kHostile = {"a$(touch PWNED1)b", "`touch PWNED2`", "x\"; touch PWNED3; \"",
                                           "y'; touch PWNED4; '", "two words\nand a line; touch PWNED5"};

void expect_no_markers(const fs::path& dir) {
  for (int i = 1; i <= 5; ++i) {
    const fs::path marker = dir / ("PWNED" + std::to_string(i));
    EXPECT_FALSE(fs::exists(marker)) << "a shell ran: " << marker;
  }
}

// Runs the test body with `dir` as the working directory (where an injected `touch` would write).
class InDirectory {
 public:
  explicit InDirectory(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~InDirectory() { fs::current_path(old_); }

 private:
  fs::path old_;
};

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string make_executable(const fs::path& path) {
  write_file(path, "#!/bin/sh\nexit 0\n");
  fs::permissions(path, fs::perms::owner_all);
  return path.string();
}

}  // namespace

TEST(Subprocess, FindExecutableSkipsRelativePathEntries) {
  const auto sh = coe::find_executable("sh");
  ASSERT_TRUE(sh.has_value());
  EXPECT_TRUE(sh->is_absolute()) << *sh;
  EXPECT_FALSE(coe::find_executable("coe-no-such-program").has_value());

  const fs::path dir = scratch_dir("find-exe");
  make_executable(dir / "coe-fake-tool");
  InDirectory cwd(dir);
  {
    // ".", "" and "bin" all mean the working directory (or below it): never searched.
    ScopedEnv path("PATH", ".::bin:" + std::string("/nonexistent-coe"));
    EXPECT_FALSE(coe::find_executable("coe-fake-tool").has_value());
  }
  {
    ScopedEnv path("PATH", "/nonexistent-coe:" + dir.string());
    const auto found = coe::find_executable("coe-fake-tool");
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(*found, dir / "coe-fake-tool");
  }
  // A name with a slash is taken as a path; a directory or a non-executable file is no program.
  EXPECT_EQ(coe::find_executable("./coe-fake-tool"), fs::path("./coe-fake-tool"));
  write_file(dir / "plain", "not a program\n");
  EXPECT_FALSE(coe::find_executable("./plain").has_value());
  EXPECT_FALSE(coe::find_executable(dir.string()).has_value());
}

TEST(Subprocess, ArgumentsAreDataNotShellCode) {
  const fs::path dir = scratch_dir("argv");
  const auto printf_exe = coe::find_executable("printf");
  ASSERT_TRUE(printf_exe.has_value());
  InDirectory cwd(dir);
  std::vector<std::string> argv{printf_exe->string(), "[%s]"};
  argv.insert(argv.end(), kHostile.begin(), kHostile.end());
  const fs::path log = dir / "out.log";
  EXPECT_EQ(coe::run_process(argv, log), 0);
  std::string expected;
  for (const auto& a : kHostile) expected += "[" + a + "]";
  EXPECT_EQ(read_file(log), expected);
  expect_no_markers(dir);
  // The log is appended to, not replaced.
  EXPECT_EQ(coe::run_process({printf_exe->string(), "more"}, log), 0);
  EXPECT_EQ(read_file(log), expected + "more");
}

TEST(Subprocess, ExitStatusSignalsAndStartFailures) {
  const auto sh = coe::find_executable("sh");
  ASSERT_TRUE(sh.has_value());
  const fs::path dir = scratch_dir("status");
  EXPECT_EQ(coe::run_process({sh->string(), "-c", "echo out; echo err >&2; exit 7"}, dir / "log"), 7);
  EXPECT_EQ(read_file(dir / "log"), "out\nerr\n");
  EXPECT_EQ(coe::run_process({sh->string(), "-c", "kill -TERM $$"}, dir / "log"), 128 + SIGTERM);
  // stdin is /dev/null: a child never waits on the tool's terminal.
  EXPECT_EQ(coe::run_process({sh->string(), "-c", "read line; echo \"read:$?\""}, dir / "stdin.log"), 0);
  EXPECT_EQ(read_file(dir / "stdin.log"), "read:1\n");

  expect_error(
      [&] {
        coe::run_process({"/nonexistent-coe/tool", "x"}, dir / "log");
      },
      {"/nonexistent-coe/tool", "cannot start"});
  expect_error(
      [&] {
        coe::run_process({sh->string(), "-c", "true"}, dir / "missing" / "x.log");
      },
      {"missing/x.log", "cannot open for writing", "No such file"});
  expect_error([&] { coe::run_process({}); }, {"no program"});
}

TEST(Subprocess, GnuplotGetsItsArgumentsAsStrings) {
  if (!coe::find_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path dir = scratch_dir("gnuplot-args");
  // The script prints each argument to a file; gnuplot code in an argument must stay text.
  const std::string script = write_file(dir / "echo.gp", "set print ARG1\n"
                                                         "print ARGC\n"
                                                         "do for [i=2:ARGC] { print ARGV[i] }\n"
                                                         "unset print\n");
  std::vector<std::string> args{(dir / "printed.txt").string(),
                                "x'; system('touch PWNED1'); '",
                                "\"; system(\"touch PWNED2\"); \"",
                                "`touch PWNED3`",
                                "$(touch PWNED4)",
                                "@macro; touch PWNED5"};
  InDirectory cwd(dir);
  ASSERT_EQ(coe::run_gnuplot(script, args, dir / "gnuplot.log"), 0) << read_file(dir / "gnuplot.log");
  std::string expected = std::to_string(args.size()) + "\n";
  for (size_t i = 1; i < args.size(); ++i) expected += args[i] + "\n";
  EXPECT_EQ(read_file(dir / "printed.txt"), expected);
  expect_no_markers(dir);
}

TEST(JsonLimits, NestingDeeperThanTheCapIsAOneLineError) {
  auto parse = [](const std::string& text, const std::string& what) {
    return nlohmann::json::parse(text, coe::json_depth_limit(what));
  };
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_EQ(parse(nested(coe::kMaxJsonDepth), "f.json").dump(), nested(coe::kMaxJsonDepth));
  expect_error([&] { parse(nested(coe::kMaxJsonDepth + 1), "f.json"); }, {"f.json", "nested deeper than 64 levels"});
  // Deep enough to overflow the stack where a value is compared or printed recursively.
  expect_error([&] { parse("{\"a\":" + std::string(1000000, '['), "deep.json"); }, {"deep.json", "nested"});
  // Values are kept as parsed.
  const auto j = nlohmann::json::parse(R"({"a": [1, {"b": null}], "c": "d"})", coe::json_depth_limit("x"));
  EXPECT_EQ(j, nlohmann::json::parse(R"({"a": [1, {"b": null}], "c": "d"})"));
}

TEST(JsonLimits, DeeplyNestedYamlIsAOneLineError) {
  // YAML parsers recurse per level: yaml-cpp (>= 0.7) stops at its limit, reported as a parse error.
  const fs::path dir = scratch_dir("deep-yaml");
  const std::string deep =
      write_file(dir / "deep.yaml", "base: " + std::string(100000, '[') + std::string(100000, ']') + "\n");
  expect_error([&] { coe::load_yaml_file(deep); }, {"deep.yaml:1", "cannot parse", "nested deeper"});
}

// In a directory others can write to, a symlink planted at the temporary name must not make coe
// overwrite the file it points to.
TEST(FileIo, AtomicWriteNeverFollowsAFileAtItsTemporaryName) {
  const fs::path dir = scratch_dir("atomic");
  const fs::path victim = write_file(dir / "victim.txt", "precious\n");
  const fs::path target = dir / "summary.csv";
  const fs::path tmp = target.string() + ".tmp-" + std::to_string(::getpid());
  fs::create_symlink(victim, tmp);
  expect_error([&] { coe::write_file_atomic(target, "report\n"); }, {"summary.csv", "exists"});
  EXPECT_EQ(read_file(victim), "precious\n");
  EXPECT_FALSE(fs::exists(target));
  fs::remove(tmp);
  coe::write_file_atomic(target, "report\n");
  EXPECT_EQ(read_file(target), "report\n");
  EXPECT_FALSE(fs::exists(fs::symlink_status(tmp)));
}

TEST(ScratchDir, OnlyMarkedLeftoversOfDeadProcessesAreStale) {
  const fs::path dir = scratch_dir("scratch");
  const fs::path target = dir / "out";

  // A leftover of a process that died while building (it never removed its directory).
  const pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) {
    try {
      coe::create_scratch_dir(coe::scratch_path(target), "coe-test");
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(dead, &status, 0), dead);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const fs::path leftover = dir / ("out.tmp-" + std::to_string(dead));
  ASSERT_TRUE(fs::exists(leftover / coe::kScratchMarker));

  // A live process's directory (the child waits until the test lets it go).
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t live = ::fork();
  ASSERT_GE(live, 0);
  if (live == 0) {
    ::close(pipe_fds[1]);
    try {
      coe::create_scratch_dir(coe::scratch_path(target), "coe-test");
    } catch (...) {
      ::_exit(1);
    }
    char c;
    while (::read(pipe_fds[0], &c, 1) > 0) {
    }
    ::_exit(0);
  }
  ::close(pipe_fds[0]);
  const fs::path live_dir = dir / ("out.tmp-" + std::to_string(live));
  for (int i = 0; i < 500 && !fs::exists(live_dir / coe::kScratchMarker); ++i) ::usleep(10000);
  ASSERT_TRUE(fs::exists(live_dir / coe::kScratchMarker));

  // Same name pattern, no marker: not provably coe's.
  fs::create_directories(dir / ("out.tmp-" + std::to_string(dead + 1000000)));
  write_file(dir / ("out.tmp-" + std::to_string(dead + 1000000)) / "precious", "x");
  // A marker copied to a name with another pid, and a symlink to the leftover: neither counts.
  fs::create_directories(dir / "out.tmp-999999999");
  fs::copy_file(leftover / coe::kScratchMarker, dir / "out.tmp-999999999" / coe::kScratchMarker);
  fs::create_directory_symlink(leftover, dir / "out.tmp-888888888");

  EXPECT_EQ(coe::stale_scratch_dirs(target, "coe-test"), std::vector<fs::path>{leftover});
  EXPECT_TRUE(coe::stale_scratch_dirs(target, "another-tool").empty());
  EXPECT_TRUE(coe::stale_scratch_dirs(dir / "other", "coe-test").empty());

  ::close(pipe_fds[1]);
  ASSERT_EQ(::waitpid(live, &status, 0), live);
  // Now that process is gone too.
  EXPECT_EQ(coe::stale_scratch_dirs(target, "coe-test").size(), 2u);

  // Creating over an existing directory is an error naming it, never a silent reuse.
  fs::create_directories(coe::scratch_path(target));
  expect_error([&] { coe::create_scratch_dir(coe::scratch_path(target), "coe-test"); },
               {coe::scratch_path(target).string(), "exists"});
}
