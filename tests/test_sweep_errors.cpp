// Sweep files are checked before anything runs: a malformed file, a variant without a name, an
// unknown key in a variant and an unknown config key in a variant's overrides each fail with one
// line naming the variant and the key. Also: override maps (flat or nested) and lists resolve to
// the same config.
#include "coe/train/sweep.h"
#include "coe/util/error.h"

#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

class SweepErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = coe::test::make_temp_dir("sweep-errors");
    std::ofstream(dir_ / "base.yaml") << "model: {hidden_size: 16, moe_intermediate_size: 8, num_hidden_layers: 1,\n"
                                         "  num_attention_heads: 2, kv_lora_rank: 8, qk_nope_head_dim: 4,\n"
                                         "  qk_rope_head_dim: 4, v_head_dim: 4, n_routed_experts: 4,\n"
                                         "  num_experts_per_tok: 2, max_position_embeddings: 64}\n"
                                         "data: {train_files: [x.jsonl], tokenizer: byte, max_length: 32}\n"
                                         "trainer: {total_steps: 2, global_batch: 2, micro_batch: 2}\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }
  // The one-line error of load_sweep + resolve_variants ("" when it succeeds).
  std::string error_of(const fs::path& p) {
    return coe::test::error_of([&] { coe::resolve_variants(coe::load_sweep(p.string())); });
  }
  fs::path dir_;
};

TEST_F(SweepErrors, MalformedYaml) {
  const fs::path p =
      write("bad.yaml", "base: base.yaml\nvariants:\n  - name: a\n    overrides: {model.inner_iter: 2\n");
  const std::string e = error_of(p);
  EXPECT_NE(e.find("bad.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("cannot parse"), std::string::npos) << e;
}

TEST_F(SweepErrors, VariantWithoutName) {
  const std::string e =
      error_of(write("noname.yaml", "base: base.yaml\nvariants:\n  - name: a\n  - overrides: {model.inner_iter: 2}\n"));
  EXPECT_NE(e.find("variants[1].name"), std::string::npos) << e;
  EXPECT_NE(e.find("is required"), std::string::npos) << e;
}

TEST_F(SweepErrors, UnknownKeyInAVariant) {
  const std::string e = error_of(write(
      "typo.yaml", "base: base.yaml\nvariants:\n  - name: moe\n  - name: coe\n    overide: {model.inner_iter: 2}\n"));
  EXPECT_NE(e.find("variants.coe.overide"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'overrides'"), std::string::npos) << e;
}

TEST_F(SweepErrors, UnknownConfigKeyInOverrides) {
  const fs::path p = write(
      "key.yaml", "base: base.yaml\nvariants:\n  - name: moe\n  - name: coe\n    overrides: {model.inner_iterz: 2}\n");
  const std::string e = error_of(p);
  EXPECT_EQ(e, p.string() + ":5: variants.coe.overrides: model.inner_iterz: unknown key (did you mean 'inner_iter'?)");
}

// A config key in an override names the sweep file's line where it is written, first: in a
// variant's nested overrides, in the sweep's own overrides (every variant's), in a list of
// "k=v" strings, in an inline base. A typo in a base: file names that file's line.
TEST_F(SweepErrors, OverrideErrorsNameTheSweepFileLine) {
  const fs::path nested =
      write("nested.yaml", "name: t\nbase: base.yaml\nvariants:\n  - name: a\n  - name: b\n    overrides:\n"
                           "      optim:\n        lrr: 3\n");
  EXPECT_EQ(error_of(nested),
            nested.string() + ":8: variants.b.overrides: optim.lrr: unknown key (did you mean 'lr'?)");

  const fs::path top =
      write("top.yaml", "base: base.yaml\noverrides:\n  trainer:\n    sed: 2\nvariants:\n  - name: a\n");
  EXPECT_EQ(error_of(top), top.string() + ":4: overrides: trainer.sed: unknown key (did you mean 'seed'?)");

  const fs::path list = write("list.yaml", "base: base.yaml\nvariants:\n  - name: a\n    overrides:\n"
                                           "      - trainer.seed=2\n      - trainer.sed=3\n");
  EXPECT_EQ(error_of(list),
            list.string() + ":6: variants.a.overrides[1]: trainer.sed: unknown key (did you mean 'seed'?)");

  const fs::path value =
      write("value.yaml", "base: base.yaml\nvariants:\n  - name: a\n    overrides: {trainer: {micro_batch: -1}}\n");
  EXPECT_EQ(error_of(value), value.string() + ":4: variants.a.overrides: trainer.micro_batch: must be >= 1, got -1");

  const fs::path section =
      write("section.yaml", "base: base.yaml\nvariants:\n  - name: a\n    overrides: [\"model.hidden_size.x=3\"]\n");
  EXPECT_EQ(error_of(section), section.string() +
                                   ":4: variants.a.overrides[0]: --set model.hidden_size.x=3: 'hidden_size' is not "
                                   "a section");

  // The base chain: the typo is in child.yaml, line 3.
  write("child.yaml", "base: base.yaml\noptim:\n  lrr: 3\n");
  const fs::path chain = write("chain.yaml", "base: child.yaml\nvariants:\n  - name: a\n");
  const std::string e = error_of(chain);
  EXPECT_NE(e.find((dir_ / "child.yaml").string() + ":3: optim.lrr: unknown key (did you mean 'lr'?)"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.rfind(chain.string() + ": variant 'a': ", 0), 0u) << e;

  // An inline base: its own lines in the sweep file.
  const std::string base_text = coe::test::read_file(dir_ / "base.yaml");
  std::string inline_base = "base:\n";
  for (size_t at = 0, next; at < base_text.size(); at = next + 1) {
    next = base_text.find('\n', at);
    inline_base += "  " + base_text.substr(at, next - at) + "\n";
  }
  const fs::path in_base =
      write("inline.yaml", inline_base + "  optim: {wd: 0}\nvariants:\n  - name: a\n    overrides: {optim.lr: 1}\n");
  EXPECT_EQ(error_of(in_base), in_base.string() + ":8: optim.wd: unknown key (did you mean 'lr'?)");
  const fs::path in_override =
      write("inline2.yaml", inline_base + "variants:\n  - name: a\n    overrides:\n      optim.lrr: 1\n");
  EXPECT_EQ(error_of(in_override),
            in_override.string() + ":11: variants.a.overrides: optim.lrr: unknown key (did you mean 'lr'?)");
}

TEST_F(SweepErrors, BadValueInOverrides) {
  const std::string e = error_of(write(
      "value.yaml", "base: base.yaml\nvariants:\n  - name: big-k\n    overrides: [\"model.num_experts_per_tok=9\"]\n"));
  EXPECT_NE(e.find("variant 'big-k'"), std::string::npos) << e;
  EXPECT_NE(e.find("num_experts_per_tok"), std::string::npos) << e;
}

TEST_F(SweepErrors, DuplicateNamesAndUnknownBaseline) {
  EXPECT_NE(error_of(write("dup.yaml", "base: base.yaml\nvariants:\n  - name: a\n  - name: a\n")).find("appears twice"),
            std::string::npos);
  EXPECT_NE(error_of(write("bl.yaml", "base: base.yaml\nbaseline: b\nvariants:\n  - name: a\n"))
                .find("'b' is not one of the variants"),
            std::string::npos);
  EXPECT_NE(error_of(write("slash.yaml", "base: base.yaml\nvariants:\n  - name: a/b\n")).find("variants[0].name"),
            std::string::npos);
  EXPECT_NE(error_of(write("nobase.yaml", "variants:\n  - name: a\n")).find("base"), std::string::npos);
}

// `seeds:` makes one run per (seed, variant), seed by seed, each with trainer.seed as its last
// override and its own directory <variant>/seed-<s>.
TEST_F(SweepErrors, SeedsMakeARunPerSeedAndVariant) {
  const fs::path p = write("seeds.yaml", "base: base.yaml\nout_dir: out\nseeds: [3, 1]\nvariants:\n  - name: moe\n"
                                         "  - name: coe\n    overrides: {model.inner_iter: 2}\n");
  const coe::SweepSpec spec = coe::load_sweep(p.string());
  EXPECT_EQ(spec.seeds, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(spec.variant_names, (std::vector<std::string>{"moe", "coe"}));
  EXPECT_EQ(spec.baseline, "moe");
  ASSERT_EQ(spec.variants.size(), 4u);
  const char* const names[] = {"moe/seed-3", "coe/seed-3", "moe/seed-1", "coe/seed-1"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(spec.variants[i].name, names[i]);
    EXPECT_EQ(spec.variants[i].variant, i % 2 ? "coe" : "moe");
    EXPECT_EQ(spec.variants[i].seed, i < 2 ? 3 : 1);
    EXPECT_EQ(spec.variants[i].overrides.back(), i < 2 ? "trainer.seed=3" : "trainer.seed=1");
    EXPECT_EQ(coe::variant_dir(spec, spec.variants[i]), (dir_ / "out" / names[i]).string());  // beside the file
  }
  EXPECT_EQ(spec.variants[1].overrides.front(), "model.inner_iter=2");
  const auto configs = coe::resolve_variants(spec);
  EXPECT_EQ(configs[0].trainer.seed, 3);
  EXPECT_EQ(configs[3].trainer.seed, 1);
  EXPECT_EQ(configs[3].model.inner_iter, 2);
}

TEST_F(SweepErrors, SeedsAreChecked) {
  auto error_with = [&](const std::string& seeds, const std::string& rest = "") {
    return error_of(write("s.yaml", "base: base.yaml\nseeds: " + seeds + "\n" + rest + "variants:\n  - name: a\n"));
  };
  EXPECT_NE(error_with("[1, 2, 1]").find("seeds: 1 appears twice"), std::string::npos);
  EXPECT_NE(error_with("[1, -2]").find("seeds: -2: a seed is an integer >= 0"), std::string::npos);
  EXPECT_NE(error_with("[]").find("seeds: expected a list of 1 to 1000 integers"), std::string::npos);
  EXPECT_NE(error_with("3").find("seeds: expected a list"), std::string::npos);
  EXPECT_NE(error_with("[1, x]").find("seeds: item 1: expected"), std::string::npos);
  EXPECT_NE(error_with("[1]", "overrides: {trainer.seed: 4}\n").find("overrides: trainer.seed: set by seeds:"),
            std::string::npos);
  const std::string e = error_of(
      write("v.yaml", "base: base.yaml\nseeds: [1]\nvariants:\n  - name: a\n    overrides: [\"trainer.seed=2\"]\n"));
  EXPECT_NE(e.find("variants.a.overrides: trainer.seed: set by seeds:"), std::string::npos) << e;
}

TEST_F(SweepErrors, OverrideFormsAgree) {
  const fs::path p =
      write("forms.yaml", "base: base.yaml\noverrides: [\"trainer.total_steps=3\"]\nvariants:\n"
                          "  - name: flat\n    overrides: {model.inner_iter: 2, data.text_keys: [q, a]}\n"
                          "  - name: nested\n    overrides: {model: {inner_iter: 2}, data: {text_keys: [q, a]}}\n"
                          "  - name: list\n    overrides: [\"model.inner_iter=2\", \"data.text_keys=[q, a]\"]\n");
  const auto spec = coe::load_sweep(p.string());
  const auto configs = coe::resolve_variants(spec);
  ASSERT_EQ(configs.size(), 3u);
  for (const auto& c : configs) {
    EXPECT_EQ(c.model.inner_iter, 2);
    EXPECT_EQ(c.trainer.total_steps, 3);
    EXPECT_EQ(c.data.text.text_keys, (std::vector<std::string>{"q", "a"}));
  }
  EXPECT_EQ(spec.baseline, "flat");
  EXPECT_EQ(spec.out_dir, "runs/sweeps/forms");
}

// Override keys become coe-train arguments (--set KEY=VALUE): they must never read as an option.
TEST_F(SweepErrors, OverrideKeysAreConfigKeysOnly) {
  for (const std::string bad : {"\"--out=/elsewhere\": 1", "\"-model.x\": 1", "\"model.x y\": 1", "\"1model.x\": 1"}) {
    const std::string e =
        error_of(write("key.yaml", "base: base.yaml\nvariants:\n  - name: a\n    overrides: {" + bad + "}\n"));
    EXPECT_NE(e.find("variants.a.overrides"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("keys are section.key"), std::string::npos) << bad << ": " << e;
  }
  const std::string e = error_of(write("list.yaml", "base: base.yaml\noverrides: [\"--resume=model.x=1\"]\n"
                                                    "variants:\n  - name: a\n"));
  EXPECT_NE(e.find("keys are section.key"), std::string::npos) << e;
}

// YAML aliases can make a few lines name a map with billions of leaves; flattening it as
// overrides stops at a bound instead of running out of memory.
TEST_F(SweepErrors, AliasExpansionInOverridesIsBounded) {
  std::string text = "base: base.yaml\nx-defs:\n  a0: &a0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1}\n";
  for (int i = 1; i <= 12; ++i) {
    text += "  a" + std::to_string(i) + ": &a" + std::to_string(i) + " {";
    for (int k = 0; k < 8; ++k) text += (k ? ", k" : "k") + std::to_string(k) + ": *a" + std::to_string(i - 1);
    text += "}\n";
  }
  text += "overrides: {model: *a12}\nvariants:\n  - name: a\n";
  const auto start = std::chrono::steady_clock::now();
  const std::string e = error_of(write("laughs.yaml", text));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_NE(e.find("laughs.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("overrides: more than 10000 overrides"), std::string::npos) << e;
  std::string deep = "base: base.yaml\noverrides: ";
  for (int i = 0; i < 40; ++i) deep += "{k: ";
  deep += "1" + std::string(40, '}') + "\nvariants:\n  - name: a\n";
  EXPECT_NE(error_of(write("deep.yaml", deep)).find("nested deeper than 16 levels"), std::string::npos);
}

// Found by fuzz/fuzz_run_config: a key of `overrides:` that is a list let yaml-cpp's BadConversion
// escape instead of a one-line error.
TEST_F(SweepErrors, OverrideKeysThatAreListsAreErrors) {
  const std::string e =
      error_of(write("listkey.yaml", "base: base.yaml\noverrides: {model: {[a]: 1}}\nvariants:\n  - name: a\n"));
  EXPECT_NE(e.find("listkey.yaml:2: a key must be a name, not a list"), std::string::npos) << e;
}

TEST_F(SweepErrors, CommandLineNamesVariantAndKey) {
  const fs::path p = write(
      "cli.yaml", "base: base.yaml\nvariants:\n  - name: moe\n  - name: coe\n    overrides: {model.inner_iterz: 2}\n");
  std::string out;
  EXPECT_EQ(coe::test::run_command(coe::test::tool_path("coe-sweep").string() + " " + p.string() + " --dry-run", &out),
            1);
  EXPECT_EQ(out, "error: " + p.string() +
                     ":5: variants.coe.overrides: model.inner_iterz: unknown key (did you mean 'inner_iter'?)\n");
}

// Every path a sweep file writes is relative to the sweep file: base and config, out_dir,
// routing.data, the paths of an inline base (also in the base.yaml coe-sweep writes into out_dir,
// which coe-train reads) and those of overrides (coe-train gets them absolute, since it reads --set
// paths against its working directory). coe-sweep --set adds overrides relative to the working
// directory, before a seed's.
TEST_F(SweepErrors, PathsAreTheSweepFiles) {
  const fs::path sweeps = dir_ / "sweeps";
  fs::create_directories(sweeps);
  const fs::path p =
      write("sweeps/paths.yaml",
            "out_dir: ../runs/paths\n"
            "routing: {enabled: true, data: ../data/r}\n"
            "base:\n"
            "  model: {hidden_size: 16, moe_intermediate_size: 8, num_hidden_layers: 1,\n"
            "    num_attention_heads: 2, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4,\n"
            "    v_head_dim: 4, n_routed_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 64}\n"
            "  data: {train_files: [../data/t.jsonl], tokenizer: byte, prepared_dir: prep, max_length: 32}\n"
            "  trainer: {total_steps: 2, global_batch: 2, micro_batch: 2}\n"
            "seeds: [5]\n"
            "overrides: {data.val_files: [v.jsonl], trainer.total_steps: 3}\n"
            "variants:\n"
            "  - name: inline\n"
            "  - name: file\n"
            "    config: ../base.yaml\n");
  coe::SweepSpec spec = coe::load_sweep(p.string());
  EXPECT_EQ(spec.out_dir, (dir_ / "runs" / "paths").string());
  EXPECT_EQ(spec.routing.data, (dir_ / "data" / "r").string());
  ASSERT_EQ(spec.variants.size(), 2u);
  EXPECT_EQ(spec.variants[1].config, (dir_ / "base.yaml").string());
  EXPECT_EQ(spec.variants[0].overrides.front(), "data.val_files=[" + (sweeps / "v.jsonl").string() + "]");

  const fs::path elsewhere = dir_ / "elsewhere";
  fs::create_directories(elsewhere);
  const fs::path old_cwd = fs::current_path();
  fs::current_path(elsewhere);
  coe::add_cli_overrides(spec, {"data.prepared_dir=mine"});
  auto configs = coe::resolve_variants(spec);
  fs::current_path(old_cwd);
  EXPECT_EQ(spec.variants[0].overrides.back(), "trainer.seed=5");  // the seed's stays last
  for (const auto& c : configs) {
    EXPECT_EQ(c.data.val_files, (std::vector<std::string>{(sweeps / "v.jsonl").string()}));
    EXPECT_EQ(c.data.prepared_dir, (elsewhere / "mine").string());
    EXPECT_EQ(c.trainer.seed, 5);
    EXPECT_EQ(c.trainer.total_steps, 3);
  }
  EXPECT_EQ(configs[0].data.train_files, (std::vector<std::string>{(dir_ / "data" / "t.jsonl").string()}));
  EXPECT_EQ(configs[1].data.train_files, (std::vector<std::string>{(dir_ / "x.jsonl").string()}));

  // The inline base as coe-train reads it, from <out_dir>/base.yaml: the sweep file's paths.
  coe::materialise_inline_base(spec);
  ASSERT_EQ(fs::path(spec.variants[0].config), dir_ / "runs" / "paths" / "base.yaml");
  const coe::TrainConfig written = coe::load_train_config(spec.variants[0].config);
  EXPECT_EQ(written.data.train_files, configs[0].data.train_files);
  EXPECT_EQ(written.data.prepared_dir, (sweeps / "prep").string());

  // A config path is the sweep file's only; --set keys are checked as the file's.
  const std::string e = error_of(write("sweeps/missing.yaml", "base: base.yaml\nvariants:\n  - name: a\n"));
  EXPECT_NE(e.find("missing.yaml:1: base: 'base.yaml' not found (" + (sweeps / "base.yaml").string()),
            std::string::npos)
      << e;
  coe::test::expect_error([&] { coe::add_cli_overrides(spec, {"trainer.seed=2"}); },
                          {"--set trainer.seed=2: trainer.seed is set by the sweep's seeds:"});
  coe::test::expect_error([&] { coe::add_cli_overrides(spec, {"--out=x"}); }, {"--set --out=x: expected section.key"});
  const std::string bad =
      error_of(write("sweeps/home.yaml", "base: ../base.yaml\nout_dir: ~/runs\nvariants:\n  - name: a\n"));
  EXPECT_NE(bad.find("home.yaml:2: out_dir: '~/runs': ~ is not expanded"), std::string::npos) << bad;
}

}  // namespace
