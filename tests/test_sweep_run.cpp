// coe-sweep end to end on CPU: a two-variant, few-step sweep of a tiny model on a GSM8K subset
// (byte tokenizer) writes summary.csv / summary.md with both rows and the routing analysis,
// resumes a partial run with --resume, and a second invocation skips both complete variants; a
// sweep whose paths are full of shell syntax runs nothing but coe.
#include "coe/util/subprocess.h"
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// The model of the sweeps below: one tiny MoE layer (the variants change C and K).
const char* const kSweepModel =
    "  model: {hidden_size: 16, moe_intermediate_size: 8, num_hidden_layers: 1,\n"
    "          num_attention_heads: 2, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4,\n"
    "          v_head_dim: 4, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2,\n"
    "          max_position_embeddings: 128}\n";

namespace fs = std::filesystem;
using coe::test::read_file;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

TEST(SweepRun, TwoVariantsSummariseAndResume) {
  const fs::path dir = coe::test::make_temp_dir("sweep-run");
  const fs::path gsm8k = coe::test::shared_root() / "data" / "gsm8k" / "train.jsonl";
  ASSERT_TRUE(fs::exists(gsm8k)) << gsm8k;
  {
    std::ifstream in(gsm8k);
    std::ofstream out(dir / "gsm8k-80.jsonl");
    std::string line;
    for (int i = 0; i < 80 && std::getline(in, line); ++i) out << line << "\n";
  }
  const fs::path sweep = dir / "tiny-sweep.yaml";
  std::ofstream(sweep) << "name: tiny\n"
                          "out_dir: "
                       << (dir / "out").string()
                       << "\n"
                          "baseline: moe\n"
                          "base:\n"
                       << kSweepModel << "  data: {train_files: [" << (dir / "gsm8k-80.jsonl").string()
                       << "], prepared_dir: " << (dir / "prepared").string()
                       << ",\n"
                          "         tokenizer: byte, text_keys: [question, answer], val_count: 8, max_length: 64,\n"
                          "         packing: true, threads: 1}\n"
                          "  optim: {lr: 1.0e-3}\n"
                          "  trainer: {total_steps: 4, global_batch: 4, micro_batch: 4, val_interval: 2,\n"
                          "            val_batches: 1, threads: 1, log_interval: 1}\n"
                          "routing: {enabled: true, max_records: 8}\n"
                          "variants:\n"
                          "  - name: moe\n"
                          "  - name: coe\n"
                          "    overrides: {model.inner_iter: 2, model.num_experts_per_tok: 1}\n";
  const std::string sweep_cmd = coe::test::tool_path("coe-sweep").string() + " " + sweep.string();
  const fs::path out = dir / "out";

  {
    std::string dry;
    ASSERT_EQ(coe::test::run_command(sweep_cmd + " --dry-run", &dry), 0) << dry;
    EXPECT_NE(dry.find("[1/2] moe: new"), std::string::npos) << dry;
    EXPECT_FALSE(fs::exists(out / "moe")) << "--dry-run must not create run directories";
    ASSERT_EQ(coe::test::run_command(sweep_cmd + " --only nonexistent", &dry), 1) << dry;
    EXPECT_NE(dry.find("nonexistent"), std::string::npos) << dry;
  }

  std::string run1;
  const int rc1 = coe::test::run_command(sweep_cmd, &run1);
  ASSERT_EQ(rc1, 0) << run1 << read_file(out / "moe" / "train.log") << read_file(out / "coe" / "train.log");
  for (const char* v : {"moe", "coe"}) {
    EXPECT_TRUE(fs::exists(out / v / "final.json")) << v;
    EXPECT_TRUE(fs::exists(out / v / "routing.json")) << v << "\n" << read_file(out / v / "eval.log");
    EXPECT_EQ(count(read_file(out / v / "train.log"), "=== "), 1u) << v;
  }
  // Live progress (not a terminal: a line per tenth of a run, and the last line with the final
  // validation), and the results table after each variant, not only at the end.
  for (const char* v : {"[1/2] moe", "[2/2] coe"}) {
    EXPECT_NE(run1.find(std::string(v) + ": step 4/4 (100%) | loss "), std::string::npos) << run1;
    EXPECT_GE(count(run1, std::string(v) + ": step "), 1u) << run1;
    EXPECT_LE(count(run1, std::string(v) + ": step "), 5u) << run1;
  }
  EXPECT_NE(run1.find(" | val "), std::string::npos) << run1;
  EXPECT_EQ(count(run1, "| variant | status | steps |"), 2u) << run1;
  EXPECT_LT(run1.find("| coe | not run | 0/4 |"), run1.find("[2/2] coe: training")) << run1;
  const std::string csv = read_file(out / "summary.csv");
  EXPECT_EQ(count(csv, "\n"), 3u) << csv;  // header + 2 rows
  EXPECT_NE(csv.find("\nmoe,complete,1,1,,4,4,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\ncoe,complete,1,1,,4,4,"), std::string::npos) << csv;
  const std::string md = read_file(out / "summary.md");
  EXPECT_NE(md.find("| moe | complete |"), std::string::npos) << md;
  EXPECT_NE(md.find("| coe | complete |"), std::string::npos) << md;
  EXPECT_NE(md.find("distinct expert sets"), std::string::npos) << md;
  EXPECT_NE(md.find("C(64,4)^2 / C(64,8)"), std::string::npos) << md;
  EXPECT_TRUE(md.find("![val_loss.png]") != std::string::npos || md.find("Plots skipped:") != std::string::npos) << md;

  // Second invocation: both variants are complete and skipped; nothing is trained again.
  std::string run2;
  ASSERT_EQ(coe::test::run_command(sweep_cmd, &run2), 0) << run2;
  EXPECT_EQ(count(run2, "complete, skipped"), 2u) << run2;
  for (const char* v : {"moe", "coe"}) EXPECT_EQ(count(read_file(out / v / "train.log"), "=== "), 1u) << v;

  // A partial run (checkpoint, no final.json) is continued with --resume.
  fs::remove(out / "coe" / "final.json");
  std::string run3;
  ASSERT_EQ(coe::test::run_command(sweep_cmd + " --only coe", &run3), 0) << run3;
  EXPECT_NE(run3.find("coe: resuming"), std::string::npos) << run3;
  EXPECT_NE(read_file(out / "coe" / "train.log").find("--resume"), std::string::npos);
  EXPECT_TRUE(fs::exists(out / "coe" / "final.json"));
  fs::remove_all(dir);
}

TEST(SweepRun, FailedVariantDoesNotStopTheOthers) {
  const fs::path dir = coe::test::make_temp_dir("sweep-fail");
  // The first variant's data file does not exist: coe-train fails; the second one still runs
  // (it is given synthetic data through its overrides) and the sweep exits non-zero.
  const fs::path data = dir / "records.jsonl";
  {
    std::ofstream out(data);
    for (int i = 0; i < 40; ++i)
      out << "{\"question\": \"What is " << i << " plus " << i << "?\", \"answer\": \"" << 2 * i << "\"}\n";
  }
  const fs::path sweep = dir / "fail.yaml";
  std::ofstream(sweep) << "out_dir: " << (dir / "out").string()
                       << "\n"
                          "base:\n"
                       << kSweepModel << "  data: {train_files: [" << (dir / "missing.jsonl").string()
                       << "],\n"
                          "         tokenizer: byte, text_keys: [question, answer], max_length: 32, packing: true}\n"
                          "  trainer: {total_steps: 2, global_batch: 2, micro_batch: 2, threads: 1}\n"
                          "variants:\n"
                          "  - name: broken\n"
                          "  - name: works\n"
                          "    overrides: {data.train_files: ["
                       << data.string() << "]}\n";
  std::string out;
  EXPECT_EQ(coe::test::run_command(coe::test::tool_path("coe-sweep").string() + " " + sweep.string(), &out), 1) << out;
  EXPECT_NE(out.find("broken: FAILED with exit status 1"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir / "out" / "works" / "final.json")) << out;
  EXPECT_NE(read_file(dir / "out" / "broken" / "train.log").find("missing.jsonl"), std::string::npos);
  const std::string csv = read_file(dir / "out" / "summary.csv");
  EXPECT_NE(csv.find("broken,failed (exit 1)"), std::string::npos) << csv;
  EXPECT_NE(csv.find("works,complete"), std::string::npos) << csv;
  fs::remove_all(dir);
}

// A YAML double-quoted scalar holding `s` exactly.
std::string yaml_quoted(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '\\' || c == '"') q += std::string("\\") + c;
    else if (c == '\n') q += "\\n";
    else q += c;
  }
  return q + "\"";
}

bool is_png(const fs::path& p) { return read_file(p).rfind("\x89PNG\r\n\x1a\n", 0) == 0; }

// The tiny model and data of these tests, as a training config.
std::string tiny_config(const fs::path& data, const fs::path& prepared, const std::string& model_extra) {
  return "model: {hidden_size: 16, moe_intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2,\n"
         "        kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 4, n_routed_experts: 4,\n"
         "        n_shared_experts: 1, max_position_embeddings: 128" +
         model_extra +
         "}\n"
         "data: {train_files: [" +
         yaml_quoted(data.string()) + "], prepared_dir: " + yaml_quoted(prepared.string()) +
         ",\n       tokenizer: byte, text_keys: [question, answer], val_count: 4, max_length: 32, packing: true,\n"
         "       threads: 1}\n"
         "trainer: {total_steps: 2, global_batch: 2, micro_batch: 2, val_interval: 1, val_batches: 1, threads: 1}\n";
}

TEST(SweepRun, ShellSyntaxInPathsRunsNothing) {
  const fs::path dir = coe::test::scratch_dir("sweep-inject");
  // One directory name with everything a shell would act on: $(...), backticks, both quotes, a
  // space and a newline. Each `touch` would create its marker in the working directory.
  const std::string hostile = "h$(touch PWNED1)`touch PWNED2`'q\"d; touch PWNED3; \" sp\nnl";
  const fs::path h = dir / hostile;
  fs::create_directories(h);
  {
    std::ifstream in(coe::test::shared_root() / "data" / "gsm8k" / "train.jsonl");
    std::ofstream out(h / "gsm8k-40.jsonl");
    std::string line;
    for (int i = 0; i < 40 && std::getline(in, line); ++i) out << line << "\n";
  }
  coe::test::write_file(h / "base.yaml", tiny_config(h / "gsm8k-40.jsonl", h / "prepared", ", num_experts_per_tok: 2"));
  coe::test::write_file(h / "coe.yaml",
                        tiny_config(h / "gsm8k-40.jsonl", h / "prepared", ", num_experts_per_tok: 1, inner_iter: 2"));
  const fs::path out = h / "out $(touch PWNED4)";
  const std::string sweep = coe::test::write_file(h / "sweep.yaml", "name: inject\n"
                                                                    "out_dir: " +
                                                                        yaml_quoted(out.string()) +
                                                                        "\n"
                                                                        "base: " +
                                                                        yaml_quoted((h / "base.yaml").string()) +
                                                                        "\n"
                                                                        "routing: {enabled: true, max_records: 4}\n"
                                                                        "variants:\n"
                                                                        "  - name: moe\n"
                                                                        "  - name: coe\n"
                                                                        "    config: " +
                                                                        yaml_quoted((h / "coe.yaml").string()) + "\n");

  std::string output;
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  const int rc = coe::test::run_argv({coe::test::tool_path("coe-sweep").string(), sweep}, &output);
  fs::current_path(cwd);
  ASSERT_EQ(rc, 0) << output << read_file(out / "moe" / "train.log");

  for (const auto& e : fs::recursive_directory_iterator(dir))
    EXPECT_NE(e.path().filename().string().rfind("PWNED", 0), 0u) << "a shell ran: " << e.path();
  const std::string csv = read_file(out / "summary.csv");
  EXPECT_NE(csv.find("\nmoe,complete,1,1,,2,2,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\ncoe,complete,1,1,,2,2,"), std::string::npos) << csv;
  for (const char* v : {"moe", "coe"})
    EXPECT_TRUE(fs::exists(out / v / "routing.json")) << v << "\n" << read_file(out / v / "eval.log");
  const std::string md = read_file(out / "summary.md");
  if (coe::find_gnuplot()) {
    for (const char* png : {"val_loss.png", "relative.png"}) {
      EXPECT_TRUE(is_png(out / png)) << png << "\n" << md << read_file(out / "plots" / "gnuplot.log");
      EXPECT_NE(md.find(std::string("![") + png + "]"), std::string::npos) << md;
    }
  } else {
    EXPECT_NE(md.find("Plots skipped: gnuplot is not installed"), std::string::npos) << md;
  }
}

// A column of a CSV row (no quoted fields in the rows read here).
std::string csv_column(const std::string& row, size_t index) {
  std::stringstream in(row);
  std::string field;
  for (size_t i = 0; i <= index && std::getline(in, field, ','); ++i) {
  }
  return field;
}

// The row of `csv` whose first fields are `prefix` ("" when none).
std::string csv_row(const std::string& csv, const std::string& prefix) {
  std::stringstream in(csv);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return line;
  return "";
}

// seeds: end to end on the quickstart model (configs/quickstart.yaml and quickstart-coe.yaml, a few
// steps on their synthetic data): every variant runs once per seed into <variant>/seed-<s>/, seed by
// seed; the seed fixes init and data order (a plain coe-train with that seed gives the same
// losses, bit for bit on CPU; other seeds give other losses); summary.csv's statistics are those of
// runs.csv's losses, worked out here; a second invocation trains nothing; --only takes a variant or
// one run.
TEST(SweepRun, SeedsRunEachVariantPerSeedAndSummariseOverThem) {
  const fs::path dir = coe::test::scratch_dir("sweep-seeds");
  std::string out_text;
  ASSERT_EQ(coe::test::run_argv({coe::test::tool_path("coe-prepare").string(), "synth", "--records", "400", "--seed",
                                 "1", "--out", (dir / "synth.json").string()},
                                &out_text),
            0)
      << out_text;
  const fs::path configs = coe::test::source_root() / "configs";
  const fs::path out = dir / "out";
  const std::string sweep = coe::test::write_file(
      dir / "seeds.yaml",
      "name: seeds\nout_dir: " + yaml_quoted(out.string()) +
          "\nbase: " + yaml_quoted((configs / "quickstart.yaml").string()) +
          "\nseeds: [1, 2, 3]\n"
          "overrides:\n"
          "  data: {train_files: [" +
          yaml_quoted((dir / "synth.json").string()) + "], prepared_dir: " + yaml_quoted((dir / "prepared").string()) +
          ", max_length: 64, val_count: 16}\n"
          "  trainer: {total_steps: 4, global_batch: 4, micro_batch: 4, val_interval: 2, val_batches: 1,\n"
          "            save_interval: 4, threads: 1, log_interval: 1}\n"
          "variants:\n"
          "  - name: moe\n"
          "  - name: coe\n"
          "    config: " +
          yaml_quoted((configs / "quickstart-coe.yaml").string()) + "\n");
  const std::string coe_sweep = coe::test::tool_path("coe-sweep").string();

  std::string dry;
  ASSERT_EQ(coe::test::run_argv({coe_sweep, sweep, "--dry-run"}, &dry), 0) << dry;
  const char* const order[] = {"[1/6] moe/seed-1: new", "[2/6] coe/seed-1: new", "[3/6] moe/seed-2: new",
                               "[6/6] coe/seed-3: new"};
  for (size_t i = 1; i < 4; ++i) EXPECT_LT(dry.find(order[i - 1]), dry.find(order[i])) << dry;
  EXPECT_NE(dry.find("--set trainer.seed=2 --out " + (out / "moe" / "seed-2").string()), std::string::npos) << dry;

  std::string run1;
  ASSERT_EQ(coe::test::run_argv({coe_sweep, sweep}, &run1), 0) << run1;
  for (const char* v : {"moe", "coe"})
    for (int seed = 1; seed <= 3; ++seed) {
      const fs::path run = out / v / ("seed-" + std::to_string(seed));
      ASSERT_TRUE(fs::exists(run / "final.json")) << run << "\n" << run1;
      EXPECT_NE(read_file(run / "config.yaml").find("seed: " + std::to_string(seed) + "\n"), std::string::npos) << run;
    }

  // runs.csv: one row per run; the seeds train differently, and a seed reproduces its run.
  const std::string runs = read_file(out / "runs.csv");
  double moe_final[4] = {}, coe_final[4] = {};
  for (int seed = 1; seed <= 3; ++seed) {
    const std::string moe_row = csv_row(runs, "moe," + std::to_string(seed) + ",complete,4,4,");
    const std::string coe_row = csv_row(runs, "coe," + std::to_string(seed) + ",complete,4,4,");
    ASSERT_FALSE(moe_row.empty() || coe_row.empty()) << runs;
    moe_final[seed] = std::stod(csv_column(moe_row, 5));
    coe_final[seed] = std::stod(csv_column(coe_row, 5));
  }
  EXPECT_NE(moe_final[1], moe_final[2]) << runs;
  EXPECT_NE(moe_final[2], moe_final[3]) << runs;
  std::string plain;
  std::vector<std::string> train{coe::test::tool_path("coe-train").string(), (configs / "quickstart.yaml").string()};
  for (const char* o : {"data.max_length=64", "data.val_count=16", "trainer.total_steps=4", "trainer.global_batch=4",
                        "trainer.micro_batch=4", "trainer.val_interval=2", "trainer.val_batches=1",
                        "trainer.save_interval=4", "trainer.threads=1", "trainer.log_interval=1", "trainer.seed=2"})
    train.insert(train.end(), {"--set", o});
  train.insert(train.end(), {"--set", "data.train_files=[" + (dir / "synth.json").string() + "]", "--set",
                             "data.prepared_dir=" + (dir / "prepared").string(), "--out", (dir / "plain").string()});
  ASSERT_EQ(coe::test::run_argv(train, &plain), 0) << plain;
  EXPECT_EQ(read_file(dir / "plain" / "val.jsonl").substr(0, 60),
            read_file(out / "moe" / "seed-2" / "val.jsonl").substr(0, 60));
  const std::string plain_final = read_file(dir / "plain" / "final.json");
  const std::string sweep_final = read_file(out / "moe" / "seed-2" / "final.json");
  EXPECT_EQ(plain_final.substr(plain_final.find("\"final_val_loss\""), 40),
            sweep_final.substr(sweep_final.find("\"final_val_loss\""), 40));

  // summary.csv: per variant the mean, sd and t interval over the three seeds, and CoE's paired
  // difference to MoE, computed here from runs.csv's losses.
  const std::string csv = read_file(out / "summary.csv");
  const std::string coe_row = csv_row(csv, "coe,complete,3,3,1;2;3,4,4,");
  ASSERT_FALSE(coe_row.empty()) << csv;
  const double mean = (coe_final[1] + coe_final[2] + coe_final[3]) / 3;
  double ss = 0;
  for (int s = 1; s <= 3; ++s) ss += (coe_final[s] - mean) * (coe_final[s] - mean);
  const double sd = std::sqrt(ss / 2), half = 4.303 * sd / std::sqrt(3.0);
  EXPECT_NEAR(std::stod(csv_column(coe_row, 7)), mean, 2e-6) << coe_row;
  EXPECT_NEAR(std::stod(csv_column(coe_row, 8)), sd, 2e-6) << coe_row;
  EXPECT_NEAR(std::stod(csv_column(coe_row, 9)), mean - half, 2e-6) << coe_row;
  EXPECT_NEAR(std::stod(csv_column(coe_row, 10)), mean + half, 2e-6) << coe_row;
  double diff = 0;
  for (int s = 1; s <= 3; ++s) diff += (coe_final[s] - moe_final[s]) / 3;
  EXPECT_NEAR(std::stod(csv_column(coe_row, 15)), diff, 2e-6) << coe_row;
  EXPECT_FALSE(csv_row(csv, "moe,complete,3,3,1;2;3,4,4,").empty()) << csv;
  const std::string md = read_file(out / "summary.md");
  EXPECT_NE(md.find("## Over seeds (1, 2, 3)"), std::string::npos) << md;
  EXPECT_NE(md.find("| coe/seed-3 | complete | 4/4 |"), std::string::npos) << md;
  if (coe::find_gnuplot()) {
    EXPECT_TRUE(is_png(out / "val_loss.png")) << md;
    EXPECT_NE(read_file(out / "plots" / "val-coe.dat").find("\n4 "), std::string::npos);
    EXPECT_NE(read_file(out / "plots" / "val-coe.dat").find(" 3\n"), std::string::npos) << "three runs per point";
  }

  // Nothing left to train; --only picks a variant's runs or one run.
  std::string run2;
  ASSERT_EQ(coe::test::run_argv({coe_sweep, sweep}, &run2), 0) << run2;
  EXPECT_EQ(count(run2, "complete, skipped"), 6u) << run2;
  fs::remove(out / "coe" / "seed-2" / "final.json");
  std::string run3;
  ASSERT_EQ(coe::test::run_argv({coe_sweep, sweep, "--only", "coe/seed-2"}, &run3), 0) << run3;
  EXPECT_NE(run3.find("[4/6] coe/seed-2: resuming"), std::string::npos) << run3;
  EXPECT_EQ(count(run3, ": resuming"), 1u) << run3;
  std::string dry2;
  ASSERT_EQ(coe::test::run_argv({coe_sweep, sweep, "--only", "coe", "--dry-run"}, &dry2), 0) << dry2;
  EXPECT_EQ(count(dry2, "complete (would skip)"), 3u) << dry2;
  EXPECT_EQ(dry2.find("moe/seed"), std::string::npos) << dry2;
}

}  // namespace
