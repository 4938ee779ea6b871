// coe-plot as a user runs it: on a tiny run that coe-train finished (and coe-eval --routing
// analysed) it writes the PNGs (checked by signature and size) and the data they are drawn from;
// several runs overlay into one directory; a directory without metrics, a bad log line and bad
// flags are one-line errors; without gnuplot the data files are still written and the message
// says where.
#include "support/test_env.h"
#include "support/tiny_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;
using coe::test::run_argv;
using coe::test::tool_path;

bool has_gnuplot() { return coe::test::run_command("command -v gnuplot > /dev/null") == 0; }

// A PNG file: the 8-byte signature, an IHDR chunk first, and more than a trivial size.
void expect_png(const fs::path& p) {
  ASSERT_TRUE(fs::exists(p)) << p;
  const std::string bytes = read_file(p);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << p;
  EXPECT_EQ(bytes.substr(12, 4), "IHDR") << p;
  EXPECT_GT(bytes.size(), 2000u) << p;
}

size_t count_lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

class ToolsPlot : public ::testing::Test {
 protected:
  // One tiny run for every test: 8 steps, validation every 4, the routing analysis of its final
  // checkpoint.
  static void SetUpTestSuite() {
    root_ = coe::test::scratch_dir("plot");
    run_ = root_ / "tiny-run";
    coe::test::write_file(root_ / "run.yaml", coe::test::tiny_gsm8k_run_yaml(root_ / "prepared", run_, 8));
    std::string out;
    ASSERT_EQ(run_argv({tool_path("coe-train").string(), (root_ / "run.yaml").string(), "--set",
                        "trainer.val_interval=4", "--set", "trainer.threads=1"},
                       &out),
              0)
        << out;
    ASSERT_EQ(
        run_argv({tool_path("coe-eval").string(), "--checkpoint", run_.string(), "--data",
                  (root_ / "prepared").string(), "--max-records", "8", "--routing", (run_ / "routing.json").string()},
                 &out),
        0)
        << out;
  }
  static fs::path root_, run_;
};
fs::path ToolsPlot::root_, ToolsPlot::run_;

// coe-sweep (plot_sweep.gp) colours variant k of a sweep file as coe-plot (plot_run.gp) colours
// run k: the same palette in both scripts, so a sweep's plots and coe-plot over its variants in
// order agree.
TEST(ToolsPlotScripts, SweepAndRunPlotsShareThePalette) {
  auto palette = [](const char* script) {
    const std::string text = read_file(coe::test::source_root() / "tools" / script);
    const size_t at = text.find("\ncolours = \"");
    return at == std::string::npos ? std::string() : text.substr(at, text.find('\n', at + 1) - at);
  };
  EXPECT_FALSE(palette("plot_run.gp").empty());
  EXPECT_EQ(palette("plot_sweep.gp"), palette("plot_run.gp"));
}

TEST_F(ToolsPlot, PlotsAFinishedRun) {
  std::string out;
  const int rc = run_argv({tool_path("coe-plot").string(), run_.string()}, &out);
  const fs::path plots = run_ / "plots";
  // The data behind the plots, with or without gnuplot: a header and one line per step.
  EXPECT_EQ(count_lines(read_file(plots / "train-1.dat")), 1u + 8u);
  EXPECT_EQ(count_lines(read_file(plots / "val-1.dat")), 1u + 2u);
  // Throughput is plotted smoothed as the loss is: column 8 is the debiased EMA (weight 0.9, the
  // default) of column 6, tokens/s, worked out here.
  {
    std::istringstream train(read_file(plots / "train-1.dat"));
    std::string line;
    std::getline(train, line);
    EXPECT_NE(line.find("tokens_per_s_ema(weight 0.9)"), std::string::npos) << line;
    double m = 0, debias = 1;
    while (std::getline(train, line)) {
      std::istringstream fields(line);
      std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
      ASSERT_EQ(f.size(), 8u) << line;
      m = 0.9 * m + 0.1 * std::stod(f[5]);
      debias *= 0.9;
      EXPECT_NEAR(std::stod(f[7]), m / (1 - debias), 1e-6 * m) << line;
    }
  }
  const std::string load = read_file(plots / "expert_load-1.dat");
  EXPECT_EQ(count_lines(load), 1u + 2u) << load;  // header + 2 layers x 1 iteration
  EXPECT_NE(load.find("\"L1 i0\""), std::string::npos) << load;
  if (!has_gnuplot()) {
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("error: gnuplot is not installed"), std::string::npos) << out;
    EXPECT_NE(out.find(plots.string()), std::string::npos) << out;
    GTEST_SKIP() << "gnuplot is not installed: the PNGs are not checked";
  }
  ASSERT_EQ(rc, 0) << out << read_file(plots / "gnuplot.log");
  for (const char* png :
       {"loss.png", "val_loss.png", "lr.png", "grad_norm.png", "tokens_per_s.png", "expert_load.png"}) {
    expect_png(plots / png);
    EXPECT_NE(out.find("wrote " + (plots / png).string()), std::string::npos) << out;
  }
  for (const auto& e : fs::directory_iterator(plots))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left behind: " << e.path();
}

TEST_F(ToolsPlot, OverlaysSeveralRunsIntoOut) {
  // The same run under another name, still training: its last line is half written.
  const fs::path other = root_ / "other run";
  fs::create_directories(other);
  const std::string metrics = read_file(run_ / "metrics.jsonl");
  coe::test::write_file(other / "metrics.jsonl", metrics.substr(0, metrics.size() - 30));
  const fs::path out_dir = root_ / "overlay";
  std::string out;
  const int rc =
      run_argv({tool_path("coe-plot").string(), run_.string(), other.string(), "--out", out_dir.string()}, &out);
  EXPECT_EQ(count_lines(read_file(out_dir / "train-2.dat")), 1u + 7u) << "the torn last line is not read";
  EXPECT_FALSE(fs::exists(out_dir / "val-2.dat"));
  const std::string runs = read_file(out_dir / "runs.txt");
  EXPECT_NE(runs.find("1 tiny-run "), std::string::npos) << runs;
  EXPECT_NE(runs.find("2 other run "), std::string::npos) << runs;
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  ASSERT_EQ(rc, 0) << out << read_file(out_dir / "gnuplot.log");
  for (const char* png :
       {"loss.png", "val_loss.png", "lr.png", "grad_norm.png", "tokens_per_s.png", "expert_load-tiny-run.png"})
    expect_png(out_dir / png);
}

TEST_F(ToolsPlot, BadInputIsOneLineError) {
  const fs::path empty = root_ / "empty";
  fs::create_directories(empty);
  const fs::path bad = root_ / "bad";
  coe::test::write_file(bad / "metrics.jsonl", read_file(run_ / "metrics.jsonl") + "{\"step\": 9}\n");
  const fs::path bad_routing = root_ / "routing.json";
  coe::test::write_file(bad_routing, "{\"routing\": [{\"layer\": 0, \"iteration\": 0, \"expert_load\": []}]}");
  const std::string plot = tool_path("coe-plot").string();
  const struct {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{plot, empty.string()}, empty.string() + ": no metrics.jsonl"},
      {{plot, (root_ / "missing").string()}, (root_ / "missing").string() + ": not a directory"},
      {{plot, bad.string()}, (bad / "metrics.jsonl").string() + ":9: no \"loss\""},
      {{plot, run_.string(), bad.string()}, "2 run directories: give --out DIR"},
      {{plot, run_.string(), run_.string(), "--out", (root_ / "o").string(), "--routing", bad_routing.string()},
       "--routing " + bad_routing.string() + ": only with one run directory"},
      {{plot, run_.string(), "--out", (root_ / "o").string(), "--routing", bad_routing.string()},
       bad_routing.string() + ": routing[0]: \"expert_load\" is not a non-empty array"},
      {{plot, run_.string(), "--smoothing", "1.5"}, "--smoothing"},
      {{plot}, "run_dirs is required"},
  };
  for (const auto& c : cases) {
    std::string out;
    EXPECT_EQ(run_argv(c.args, &out), 1) << c.message << ": " << out;
    EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
    EXPECT_EQ(count_lines(out), 1u) << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << "'" << c.message << "' not in: " << out;
  }
}

TEST_F(ToolsPlot, WithoutGnuplotTheDataFilesAreWritten) {
  const fs::path out_dir = root_ / "no-gnuplot";
  std::string out;
  // An empty PATH: gnuplot is not found.
  const int rc = coe::test::run_command(
      "env PATH=/nonexistent " + tool_path("coe-plot").string() + " " + run_.string() + " --out " + out_dir.string(),
      &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(out, "error: gnuplot is not installed (apt-get install gnuplot-nox); the data files are in " +
                     out_dir.string() + "\n");
  for (const char* f : {"train-1.dat", "val-1.dat", "expert_load-1.dat", "runs.txt"})
    EXPECT_TRUE(fs::exists(out_dir / f)) << f;
  EXPECT_FALSE(fs::exists(out_dir / "loss.png"));
}

// A metrics.jsonl with only step, loss and lr (written by hand or by another tool): the curves
// that no run logged are skipped and said so, the others drawn (gnuplot failed on the empty
// log-scale gradient plot before, and nothing was drawn).
TEST_F(ToolsPlot, CurvesNoRunLoggedAreSkipped) {
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path run = root_ / "minimal-log";
  std::string metrics;
  for (int step = 1; step <= 5; ++step)
    metrics +=
        "{\"step\": " + std::to_string(step) + ", \"loss\": " + std::to_string(3.0 - 0.1 * step) + ", \"lr\": 0.001}\n";
  coe::test::write_file(run / "metrics.jsonl", metrics);
  std::string out;
  ASSERT_EQ(run_argv({tool_path("coe-plot").string(), run.string()}, &out), 0)
      << out << read_file(run / "plots" / "gnuplot.log");
  EXPECT_NE(out.find("skipped grad_norm.png: no run logged grad_norm\n"), std::string::npos) << out;
  EXPECT_NE(out.find("skipped tokens_per_s.png: no run logged tokens_per_s\n"), std::string::npos) << out;
  expect_png(run / "plots" / "loss.png");
  expect_png(run / "plots" / "lr.png");
  EXPECT_FALSE(fs::exists(run / "plots" / "grad_norm.png"));
  EXPECT_FALSE(fs::exists(run / "plots" / "tokens_per_s.png"));
}

// A full disk: gnuplot exits 0 after writing a truncated PNG (cairo's failed writes go
// unreported). The file size limit (RLIMIT_FSIZE, `ulimit -f`, with SIGXFSZ ignored so that a
// write past it fails with EFBIG as on a full disk) cuts every PNG at 8 KiB. coe-plot checks each
// PNG before giving it its name: the truncated ones are removed, the complete PNGs of an earlier
// run stay, and the error names the file (it said "wrote loss.png" and exited 0 before).
TEST_F(ToolsPlot, ATruncatedPngIsAnErrorAndNeverGetsItsName) {
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path out_dir = root_ / "full-disk";
  std::string out;
  ASSERT_EQ(run_argv({tool_path("coe-plot").string(), run_.string(), "--out", out_dir.string()}, &out), 0) << out;
  const std::string earlier = read_file(out_dir / "loss.png");
  ASSERT_GT(earlier.size(), 8192u) << "the test needs PNGs larger than the limit";
  fs::remove(out_dir / "lr.png");

  const int rc = run_argv({"/bin/bash", "-c", "trap '' XFSZ; ulimit -f 8; exec \"$@\"", "bash",
                           tool_path("coe-plot").string(), run_.string(), "--out", out_dir.string()},
                          &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(out.rfind("error: " + (out_dir / "loss.png").string() +
                          ": truncated PNG (8192 bytes, no IEND chunk at the end: the disk may be full); "
                          "not written either: lr.png, grad_norm.png",
                      0),
            0u)
      << out;
  EXPECT_EQ(count_lines(out), 1u) << out;
  EXPECT_TRUE(read_file(out_dir / "loss.png") == earlier) << "the complete PNG of the earlier run stays";
  EXPECT_FALSE(fs::exists(out_dir / "lr.png"));
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << "a temporary is left: " << name;
    if (entry.path().extension() == ".png") {
      const std::string bytes = read_file(entry.path());
      EXPECT_TRUE(bytes.size() > 12 &&
                  bytes.substr(bytes.size() - 12) == std::string("\0\0\0\0IEND\xae\x42\x60\x82", 12))
          << "not a complete PNG: " << name;
    }
  }
}

}  // namespace

namespace {

// A coe-plot copied out of the build (cp build/bin/coe-plot ~/bin/) still finds its gnuplot script:
// the build's share/coe/ is compiled in, after <bin>/../share/coe/.
TEST_F(ToolsPlot, ACopiedBinaryFindsItsScript) {
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path bin = coe::test::scratch_dir("copied-plot") / "elsewhere" / "bin";
  fs::create_directories(bin);
  fs::copy_file(tool_path("coe-plot"), bin / "coe-plot");
  const fs::path out = bin.parent_path() / "plots";
  std::string output;
  ASSERT_EQ(run_argv({(bin / "coe-plot").string(), run_.string(), "--out", out.string()}, &output), 0) << output;
  expect_png(out / "loss.png");
}

}  // namespace
