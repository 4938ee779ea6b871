// Run-configuration parsing (every error names its key and where it came from), base-file
// inheritance and the resolved-config round trip.
#include "coe/train/train_config.h"
#include "coe/util/data_root.h"
#include "coe/util/error.h"

#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>

namespace {

namespace fs = std::filesystem;

const char* const kBase = R"(model:
  vocab_size: 259
  hidden_size: 32
  intermediate_size: 64
  moe_intermediate_size: 16
  num_hidden_layers: 2
  num_attention_heads: 4
  kv_lora_rank: 16
  qk_nope_head_dim: 8
  qk_rope_head_dim: 8
  v_head_dim: 8
  n_routed_experts: 8
  num_experts_per_tok: 2
  max_position_embeddings: 128
data:
  train_files: [train.jsonl]
  text_keys: [question, answer]
  max_length: 64
  truncation: right
optim:
  lr: 3.0e-4
  schedule: cosine
  min_lr: 3.0e-5
trainer:
  total_steps: 100
  global_batch: 8
  micro_batch: 2
)";

class TrainConfig : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = coe::test::make_temp_dir("train-config"); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text, const std::string& name = "run.yaml") {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

  // The error message of loading `text` with `overrides`, "" when it loads.
  std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
    return coe::test::error_of([&] { coe::load_train_config(write(text), overrides); });
  }

  fs::path dir_;
};

TEST_F(TrainConfig, DefaultsAndValues) {
  coe::TrainConfig c = coe::load_train_config(write(kBase));
  EXPECT_EQ(c.model.hidden_size, 32);
  EXPECT_TRUE(c.model_vocab_given);
  EXPECT_EQ(c.data.max_length, 64);
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.optim.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c.optim.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.optim.clip_grad, 1.0);
  EXPECT_EQ(c.optim.decay, coe::DecayMode::kAll);
  EXPECT_EQ(c.optim.schedule, coe::LrScheduleKind::kCosine);
  EXPECT_EQ(c.optim.resolved_warmup_steps(100), 10);  // warmup_ratio 0.1 by default
  EXPECT_EQ(c.trainer.accumulation_steps(), 4);
  EXPECT_EQ(c.trainer.device, "cpu");
  EXPECT_EQ(c.trainer.dtype, "float32");
  EXPECT_EQ(c.trainer.resume, "never");
}

TEST_F(TrainConfig, OverridesApply) {
  coe::TrainConfig c = coe::load_train_config(
      write(kBase), {"trainer.total_steps=7", "optim.betas=[0.8, 0.99]", "model.inner_iter=2", "optim.warmup_steps=3"});
  EXPECT_EQ(c.trainer.total_steps, 7);
  EXPECT_DOUBLE_EQ(c.optim.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.99);
  EXPECT_EQ(c.model.inner_iter, 2);
  EXPECT_EQ(c.optim.resolved_warmup_steps(7), 3);
}

TEST_F(TrainConfig, ResolvedYamlRoundTrips) {
  coe::TrainConfig c = coe::load_train_config(write(kBase), {"optim.decay=no_norms_biases", "data.val_count=10"});
  const std::string yaml = coe::train_config_to_yaml(c);
  EXPECT_NE(yaml.find("lr: 0.0003\n"), std::string::npos) << yaml;  // shortest form, not 17 digits
  coe::TrainConfig back = coe::load_train_config(write(yaml, "resolved.yaml"));
  EXPECT_EQ(coe::train_config_to_yaml(back), yaml);
  EXPECT_EQ(back.optim.decay, coe::DecayMode::kNoNormsBiases);
  EXPECT_EQ(back.data.split.val_count.value_or(-1), 10);
  EXPECT_EQ(back.model.kv_lora_rank, 16);
  EXPECT_DOUBLE_EQ(back.optim.min_lr, 3e-5);
}

TEST_F(TrainConfig, ModelFromJsonWithOverrides) {
  std::ofstream(dir_ / "config.json") << R"({"vocab_size": 300, "hidden_size": 48, "num_hidden_layers": 3,
    "num_attention_heads": 4, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8,
    "n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "architectures": ["CoeForCausalLM"]})";
  std::string text = kBase;
  text.replace(0, text.find("data:"), "model:\n  from: config.json\n  hidden_size: 64\n");
  coe::TrainConfig c = coe::load_train_config(write(text));  // from: is found beside the run config
  EXPECT_EQ(c.model.hidden_size, 64);
  EXPECT_EQ(c.model.num_hidden_layers, 3);
  EXPECT_EQ(c.model.vocab_size, 300);
  EXPECT_EQ(c.model_from, "config.json");
}

TEST_F(TrainConfig, VocabOmittedIsTakenFromTheTokenizer) {
  std::string text = kBase;
  text.erase(text.find("  vocab_size: 259\n"), std::string("  vocab_size: 259\n").size());
  EXPECT_FALSE(coe::load_train_config(write(text)).model_vocab_given);
}

TEST_F(TrainConfig, UnknownKeysSuggestTheNearest) {
  EXPECT_NE(error_of(kBase, {"optim.learning_rat=1"}).find("optim.learning_rat: unknown key"), std::string::npos);
  std::string e = error_of(std::string(kBase) + "  micro_bach: 4\n");
  EXPECT_NE(e.find("run.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.micro_bach: unknown key (did you mean 'micro_batch'?)"), std::string::npos) << e;
  e = error_of(std::string(kBase) + "traner: {}\n");
  EXPECT_NE(e.find("traner: unknown key (did you mean 'trainer'?)"), std::string::npos) << e;
  e = error_of(kBase, {"model.hiden_size=3"});
  EXPECT_NE(e.find("model.hiden_size: unknown key (did you mean 'hidden_size'?)"), std::string::npos) << e;
  e = error_of(kBase, {"data.max_lenght=3"});
  EXPECT_NE(e.find("data.max_lenght: unknown key (did you mean 'max_length'?)"), std::string::npos) << e;
  e = error_of(kBase, {"trainer.save_intervall=3"});
  EXPECT_NE(e.find("did you mean 'save_interval'?"), std::string::npos) << e;
}

TEST_F(TrainConfig, BadTypesNameKeyAndFile) {
  std::string e = error_of(kBase, {"trainer.total_steps=many"});
  EXPECT_NE(e.find("run.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.total_steps: expected an integer, got 'many'"), std::string::npos) << e;
  e = error_of(kBase, {"optim.lr=fast"});
  EXPECT_NE(e.find("optim.lr: expected a number, got 'fast'"), std::string::npos) << e;
  e = error_of(kBase, {"trainer.activation_checkpointing=maybe"});
  EXPECT_NE(e.find("trainer.activation_checkpointing: expected true or false"), std::string::npos) << e;
  e = error_of(kBase, {"optim.betas=0.9"});
  EXPECT_NE(e.find("optim.betas: expected a list"), std::string::npos) << e;
  e = error_of(kBase, {"trainer={a: 1}"});
  EXPECT_NE(e.find("trainer.a: unknown key"), std::string::npos) << e;
  e = error_of(std::string(kBase) + "  seed: [1]\n");
  EXPECT_NE(e.find("run.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.seed: expected an integer, got a list"), std::string::npos) << e;
}

TEST_F(TrainConfig, OutOfRangeValues) {
  struct Case {
    const char* override_;
    const char* expected;
  };
  const Case cases[] = {
      {"optim.lr=0", "optim.lr: must be > 0, got 0"},
      {"optim.lr=-1e-3", "optim.lr: must be > 0"},
      {"optim.betas=[0.9, 1.0]", "optim.betas: each beta must be in [0, 1), got 1"},
      {"optim.betas=[0.9]", "optim.betas: expected two values"},
      {"optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0"},
      {"optim.eps=0", "optim.eps: must be > 0"},
      {"optim.warmup_ratio=1.5", "optim.warmup_ratio: must be in [0, 1], got 1.5"},
      {"optim.warmup_steps=-2", "optim.warmup_steps: must be >= 0"},
      {"optim.warmup_steps=200", "optim.warmup_steps: 200 exceeds trainer.total_steps 100"},
      {"optim.schedule=exp", "optim.schedule: unknown schedule 'exp' (constant | cosine | linear)"},
      {"optim.min_lr=1", "optim.min_lr: must be in [0, lr=0.0003], got 1"},
      {"optim.clip_grad=-1", "optim.clip_grad: must be >= 0"},
      {"optim.decay=some", "optim.decay: unknown value 'some' (all | no_norms_biases)"},
      {"trainer.total_steps=0", "trainer.total_steps: must be >= 1, got 0"},
      {"trainer.global_batch=0", "trainer.global_batch: must be >= 1"},
      {"trainer.micro_batch=-4", "trainer.micro_batch: must be >= 1"},
      {"trainer.micro_batch=3", "trainer.micro_batch: 3 does not divide global_batch 8"},
      {"trainer.val_interval=-1", "trainer.val_interval: must be >= 0"},
      {"trainer.keep_last=-1", "trainer.keep_last: must be >= 0"},
      {"trainer.log_interval=0", "trainer.log_interval: must be >= 1"},
      {"trainer.threads=-2", "trainer.threads: must be >= 0"},
      {"trainer.seed=-1", "trainer.seed: must be >= 0"},
      {"trainer.device=tpu", "trainer.device: unknown device 'tpu' (cpu | cuda | cuda:N)"},
      {"trainer.dtype=float16", "trainer.dtype: unknown dtype 'float16' (float32 | bfloat16)"},
      {"trainer.expert_dispatch=fast",
       "trainer.expert_dispatch: unknown dispatch 'fast' (auto | grouped | segmented | masked)"},
      {"data.max_length=256", "data.max_length: 256 exceeds model.max_position_embeddings 128"},
      {"model.num_experts_per_tok=9", "num_experts_per_tok"},
  };
  for (const auto& c : cases) {
    const std::string e = error_of(kBase, {c.override_});
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.override_ << " -> '" << e << "'";
    EXPECT_NE(e.find("run.yaml"), std::string::npos) << c.override_ << " -> '" << e << "'";
  }
  // Both warmup forms at once.
  const std::string e = error_of(kBase, {"optim.warmup_steps=3", "optim.warmup_ratio=0.2"});
  EXPECT_NE(e.find("set warmup_ratio or warmup_steps, not both"), std::string::npos) << e;
}

TEST_F(TrainConfig, MicroBatchErrorPointsAtTheLine) {
  std::string text = std::string(kBase);
  text.replace(text.find("micro_batch: 2"), 14, "micro_batch: 3");
  const std::string e = error_of(text);
  EXPECT_NE(e.find("run.yaml:27: trainer.micro_batch: 3 does not divide global_batch 8"), std::string::npos) << e;
}

TEST_F(TrainConfig, FileErrors) {
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("model: [1, 2]\ndata: {train_files: [a]}\n").find("model: expected a mapping"), std::string::npos);
  EXPECT_NE(error_of("model: {}\n").find("data"), std::string::npos);
  EXPECT_NE(error_of("model: {hidden_size: 32\n").find("cannot parse"), std::string::npos);
  try {
    coe::load_train_config((dir_ / "missing.yaml").string());
    FAIL();
  } catch (const coe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.yaml: file not found"), std::string::npos);
  }
  std::string text = kBase;
  text.replace(0, text.find("data:"), "model:\n  from: nowhere.json\n");
  EXPECT_NE(error_of(text).find("model.from: " + (dir_ / "nowhere.json").string() + " not found"), std::string::npos)
      << error_of(text);
}

// Found by fuzz/fuzz_run_config (and fuzz_hf_config): a key that is a list or a mapping (YAML's
// `? [a, b]`, `{[1]: 2}`) let yaml-cpp's BadConversion escape instead of a one-line error, in a
// section and in a base: file.
TEST_F(TrainConfig, KeysMustBeNames) {
  EXPECT_EQ(error_of("model:\n  ? [a, b]\n  : 1\n"),
            (dir_ / "run.yaml").string() + ":2: a key must be a name, not a list");
  write("base: base.yaml\n[x]: 1\n", "mid.yaml");
  write(kBase, "base.yaml");
  EXPECT_EQ(error_of("base: mid.yaml\n"), (dir_ / "mid.yaml").string() + ":2: a key must be a name, not a list");
  EXPECT_NE(error_of("base: base.yaml\ntrainer: {{a: 1}: 2}\n").find("a key must be a name, not a mapping"),
            std::string::npos);
}

// A typo'd key leaves a default in place that a value check may trip over: the typo is named,
// not the check (micro_bach: 3 leaves micro_batch 16, which does not divide global_batch 8).
TEST_F(TrainConfig, UnknownKeysAreReportedBeforeValueChecks) {
  std::string text = std::string(kBase);
  text.replace(text.find("micro_batch: 2"), 14, "micro_bach: 3");
  std::string e = error_of(text);
  EXPECT_NE(e.find("run.yaml:27: trainer.micro_bach: unknown key (did you mean 'micro_batch'?)"), std::string::npos)
      << e;
  // Also across sections: a model typo is named before a trainer value error.
  e = error_of(kBase, {"model.hidden_sise=64", "trainer.global_batch=0"});
  EXPECT_NE(e.find("model.hidden_sise: unknown key"), std::string::npos) << e;
  // Without a typo, the value error stands.
  e = error_of(kBase, {"trainer.global_batch=0"});
  EXPECT_NE(e.find("trainer.global_batch: must be >= 1"), std::string::npos) << e;
}

TEST_F(TrainConfig, OverrideErrorsNameTheOverride) {
  std::string e = error_of(kBase, {"trainer.micro_batch=3"});
  EXPECT_NE(e.find("run.yaml: --set trainer.micro_batch=3: trainer.micro_batch: 3 does not divide"), std::string::npos)
      << e;
  EXPECT_EQ(e.find("run.yaml:1"), std::string::npos) << e;
  e = error_of(kBase, {"trainer.micro_bach=3"});
  EXPECT_NE(e.find("run.yaml: --set trainer.micro_bach=3: trainer.micro_bach: unknown key"), std::string::npos) << e;
  e = error_of(kBase, {"optim={lr: -1}"});
  EXPECT_NE(e.find("--set optim={lr: -1}: optim.lr: must be > 0"), std::string::npos) << e;
}

TEST_F(TrainConfig, NullIsNotTheDefault) {
  std::string text = std::string(kBase);
  text.replace(text.find("hidden_size: 32"), 15, "hidden_size: null");
  std::string e = error_of(text);
  EXPECT_NE(e.find("run.yaml:3: model.hidden_size: is null"), std::string::npos) << e;
  e = error_of(kBase, {"trainer.total_steps=null"});
  EXPECT_NE(e.find("trainer.total_steps: is null"), std::string::npos) << e;
  // Keys where null means something keep it.
  EXPECT_EQ(error_of(kBase, {"model.q_lora_rank=null", "data.template=null", "trainer.resume=null"}), "");
}

// `base:` inheritance: a run config states only what differs from its base; errors in inherited
// keys name the base file and its line; the resolved config is complete either way.
TEST_F(TrainConfig, BaseInheritance) {
  write(kBase, "base.yaml");
  const std::string child =
      write("base: base.yaml\nmodel:\n  num_experts_per_tok: 4\ntrainer:\n  total_steps: 7\n", "child.yaml");
  const coe::TrainConfig c = coe::load_train_config(child);
  EXPECT_EQ(c.model.num_experts_per_tok, 4);
  EXPECT_EQ(c.model.hidden_size, 32);
  EXPECT_EQ(c.trainer.total_steps, 7);
  EXPECT_EQ(c.trainer.global_batch, 8);
  const coe::TrainConfig direct =
      coe::load_train_config(write(kBase), {"model.num_experts_per_tok=4", "trainer.total_steps=7"});
  std::string resolved = coe::train_config_to_yaml(c), expected = coe::train_config_to_yaml(direct);
  EXPECT_EQ(resolved, expected);

  // A chain of two, and an inherited value error named at the base's line.
  write("base: child.yaml\ntrainer:\n  micro_batch: 4\n", "grandchild.yaml");
  EXPECT_EQ(coe::load_train_config((dir_ / "grandchild.yaml").string()).trainer.total_steps, 7);
  std::string text = std::string(kBase);
  text.replace(text.find("micro_batch: 2"), 14, "micro_batch: 3");
  write(text, "bad-base.yaml");
  std::string e;
  try {
    coe::load_train_config(write("base: bad-base.yaml\ntrainer:\n  total_steps: 9\n", "c2.yaml"));
  } catch (const coe::Error& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("bad-base.yaml:27: trainer.micro_batch: 3 does not divide"), std::string::npos) << e;

  // A cycle and a missing base.
  write("base: loop-b.yaml\n", "loop-a.yaml");
  write("base: loop-a.yaml\n", "loop-b.yaml");
  try {
    coe::load_train_config((dir_ / "loop-a.yaml").string());
    ADD_FAILURE();
  } catch (const coe::Error& err) {
    EXPECT_NE(std::string(err.what()).find("is already in the chain (a cycle)"), std::string::npos) << err.what();
  }
  try {
    coe::load_train_config(write("base: nowhere.yaml\n", "c3.yaml"));
    ADD_FAILURE();
  } catch (const coe::Error& err) {
    EXPECT_NE(std::string(err.what()).find("c3.yaml:1: base: "), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("nowhere.yaml not found"), std::string::npos) << err.what();
  }
}

// The working directory for a scope.
class ScopedCwd {
 public:
  explicit ScopedCwd(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~ScopedCwd() { fs::current_path(old_); }

 private:
  fs::path old_;
};

// COE_DATA for a scope (nullopt: unset); the test harness's value comes back afterwards.
class ScopedDataRoot {
 public:
  explicit ScopedDataRoot(const std::optional<std::string>& value) {
    if (const char* v = std::getenv("COE_DATA")) old_ = v;
    if (value) ::setenv("COE_DATA", value->c_str(), 1);
    else ::unsetenv("COE_DATA");
  }
  ~ScopedDataRoot() {
    if (old_) ::setenv("COE_DATA", old_->c_str(), 1);
    else ::unsetenv("COE_DATA");
  }

 private:
  std::optional<std::string> old_;
};

// A path a config file writes is relative to that file's directory (a base file's to the base
// file), wherever the tools run; one given with --set to the working directory; once read every
// path is absolute, and the resolved config (config.yaml) reads back the same from anywhere.
TEST_F(TrainConfig, PathsAreRelativeToTheFileThatWroteThem) {
  const fs::path configs = dir_ / "configs", sub = configs / "sub", elsewhere = dir_ / "elsewhere";
  fs::create_directories(sub);
  fs::create_directories(elsewhere);
  std::string base = kBase;
  base.replace(base.find("  train_files: [train.jsonl]\n"), std::string("  train_files: [train.jsonl]\n").size(),
               "  train_files: [data/train.jsonl, ../shared.jsonl]\n  tokenizer: tok/tokenizer.json\n");
  base += "  init_from: ../ckpt\n";  // the trainer section is the last
  write(base, "configs/base.yaml");
  write("base: ../base.yaml\ndata:\n  prepared_dir: prep\n  val_files: [v.jsonl]\n"
        "trainer:\n  out_dir: ../../runs/x\n  resume: auto\n",
        "configs/sub/run.yaml");

  const ScopedCwd cwd(elsewhere);
  const coe::TrainConfig c = coe::load_train_config("../configs/sub/run.yaml");
  EXPECT_EQ(c.data.train_files,
            (std::vector<std::string>{(configs / "data" / "train.jsonl").string(), (dir_ / "shared.jsonl").string()}));
  EXPECT_EQ(c.data.tokenizer, (configs / "tok" / "tokenizer.json").string());
  EXPECT_EQ(c.trainer.init_from, (dir_ / "ckpt").string());
  EXPECT_EQ(c.data.prepared_dir, (sub / "prep").string());
  EXPECT_EQ(c.data.val_files, (std::vector<std::string>{(sub / "v.jsonl").string()}));
  EXPECT_EQ(c.trainer.out_dir, (dir_ / "runs" / "x").string());
  EXPECT_EQ(c.trainer.resume, "auto");  // a word, not a path

  // --set: the working directory's, also for a key a base file set; other keys keep their file's.
  const coe::TrainConfig o = coe::load_train_config(
      "../configs/sub/run.yaml", {"data.val_files=[mine.jsonl]", "trainer.init_from=w", "data.tokenizer=byte"});
  EXPECT_EQ(o.data.val_files, (std::vector<std::string>{(elsewhere / "mine.jsonl").string()}));
  EXPECT_EQ(o.trainer.init_from, (elsewhere / "w").string());
  EXPECT_EQ(o.data.tokenizer, "byte");
  EXPECT_EQ(o.data.prepared_dir, (sub / "prep").string());
  EXPECT_EQ(o.data.train_files.front(), (configs / "data" / "train.jsonl").string());

  // A default, written nowhere, is the working directory's.
  const coe::TrainConfig d = coe::load_train_config(write(kBase, "configs/plain.yaml"));
  EXPECT_EQ(d.trainer.out_dir, (elsewhere / "runs" / "coe").string());

  // The resolved config, as coe-train writes it into the run directory, read from another
  // directory: the same paths.
  const std::string yaml = coe::train_config_to_yaml(c);
  const std::string run_config = write(yaml, "runs/x/config.yaml");
  const ScopedCwd other(configs);
  EXPECT_EQ(coe::train_config_to_yaml(coe::load_train_config(run_config)), yaml);
}

// `$COE_DATA/` (or `${COE_DATA}/`) begins a path under the data root: the variable COE_DATA
// (relative to the working directory), else the checkout's data/. No other variable and no `~`
// is expanded. A missing input under the root is named with the variable and the download script.
TEST_F(TrainConfig, DataRootVariable) {
  const ScopedCwd cwd(dir_);
  std::string text = kBase;
  text.replace(text.find("  train_files: [train.jsonl]\n"), std::string("  train_files: [train.jsonl]\n").size(),
               "  train_files: [$COE_DATA/gsm8k/train.jsonl]\n  tokenizer: ${COE_DATA}/tokenizers/t.json\n"
               "  prepared_dir: data/$COE_DATA\n");
  const std::string file = write(text, "configs/run.yaml");
  {
    const ScopedDataRoot root(std::string("root"));
    const coe::TrainConfig c = coe::load_train_config(file, {"data.val_files=$COE_DATA/v.jsonl"});
    EXPECT_EQ(c.data.train_files.front(), (dir_ / "root" / "gsm8k" / "train.jsonl").string());
    EXPECT_EQ(c.data.tokenizer, (dir_ / "root" / "tokenizers" / "t.json").string());
    EXPECT_EQ(c.data.val_files.front(), (dir_ / "root" / "v.jsonl").string());
    EXPECT_EQ(c.data.prepared_dir, (dir_ / "configs" / "data" / "$COE_DATA").string());  // not at the start: literal

    // Read lazily: a config may name data that is not there (coe-memory never reads it).
    coe::test::expect_error([&] { coe::check_data_inputs(c.data, file); },
                            {file + ": data.train_files: " + (dir_ / "root" / "gsm8k" / "train.jsonl").string() +
                                 " not found under $COE_DATA",
                             "COE_DATA=" + (dir_ / "root").string(), "tools/download-data.sh"});
    coe::test::write_file(dir_ / "root" / "gsm8k" / "train.jsonl", "{}\n");
    coe::test::write_file(dir_ / "root" / "v.jsonl", "{}\n");
    coe::test::expect_error([&] { coe::check_data_inputs(c.data, file); },
                            {"data.tokenizer: " + (dir_ / "root" / "tokenizers" / "t.json").string()});
    coe::test::write_file(dir_ / "root" / "tokenizers" / "t.json", "{}");
    EXPECT_NO_THROW(coe::check_data_inputs(c.data, file));
    // Outside the data root: no download hint.
    coe::DataConfig local = c.data;
    local.train_files = {(dir_ / "mine.jsonl").string()};
    const std::string e = coe::test::error_of([&] { coe::check_data_inputs(local, file); });
    EXPECT_NE(e.find("data.train_files: " + (dir_ / "mine.jsonl").string() + " not found"), std::string::npos) << e;
    EXPECT_EQ(e.find("download"), std::string::npos) << e;
  }
  {
    const ScopedDataRoot unset(std::nullopt);
    const fs::path checkout_data = coe::test::source_root() / "data";
    EXPECT_EQ(coe::data_root().dir, checkout_data.lexically_normal());
    const coe::TrainConfig c = coe::load_train_config(file);
    EXPECT_EQ(c.data.train_files.front(), (checkout_data / "gsm8k" / "train.jsonl").lexically_normal().string());
    if (!fs::exists(c.data.train_files.front()))
      coe::test::expect_error(
          [&] { coe::check_data_inputs(c.data, file); },
          {"data.train_files", "COE_DATA unset: the checkout's data/ folder", "tools/download-data.sh"});
  }
  {
    const ScopedDataRoot empty(std::string(""));
    EXPECT_NE(error_of(text).find("COE_DATA is set but empty"), std::string::npos) << error_of(text);
  }
  // No other variable, no ~: configs are data, not shell.
  for (const char* bad : {"$HOME/t.json", "${HOME}/t.json", "$COE_DATAX/t.json", "~/t.json"}) {
    std::string t = kBase;
    t.replace(t.find("  train_files: [train.jsonl]\n"), std::string("  train_files: [train.jsonl]\n").size(),
              std::string("  train_files: [train.jsonl]\n  tokenizer: \"") + bad + "\"\n");
    const std::string e = error_of(t);
    EXPECT_NE(e.find("run.yaml:17: data.tokenizer: '" + std::string(bad) + "'"), std::string::npos) << bad << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

}  // namespace
