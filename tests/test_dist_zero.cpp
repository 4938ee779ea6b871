// ShardedAdamW (ZeRO-1) against coe::AdamW: one process bit for bit, and 2 and 4 Gloo ranks
// (replicated parameters sharded over the job, expert shards over subgroups) against AdamW on the
// summed gradients of all ranks, recomputed in every rank from the ranks' seeds.
//
// The ranks are this test binary itself, re-run with --gtest_filter=ZeroWorker.Run and the world
// in COE_ZERO_TEST_ROLE (the worker test is skipped in a normal run), as in test_dist_context.cpp.
#include "coe/distributed/context.h"
#include "coe/train/adamw.h"
#include "coe/train/sharded_adamw.h"
#include "coe/train/train_step.h"

#include "support/dist_launch.h"
#include "support/test_env.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using coe::AdamW;
using coe::AdamWOptions;
using coe::DistContext;
using coe::NamedParameter;
using coe::ShardedAdamW;
using TensorMap = std::map<std::string, at::Tensor>;

AdamWOptions test_options() {
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  return o;
}

double lr_at(int step) { return 1e-2 * (step + 1) / 4.0; }

// max |a - b| / max |b|: 0 when bit-equal.
double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  if (at::equal(a, b)) return 0;
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a - b).abs().max().item<double>() / scale;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- the ranks ---------------------------------------------------------------------------------
//
// Two expert shards: job rank q holds shard q % 2, and the ranks holding the same shard are its
// data-parallel group (2 ranks: groups of one; 4 ranks: {0, 2} and {1, 3}). Gradients are
// multiples of 1/4 in [-2, 2], so their sums over ranks are exact in any order: the summed
// gradients equal the reference's, whatever order Gloo adds them in.

constexpr int kAll = -1;         // every rank of the group has a gradient
constexpr int kNone = -2;        // no rank has one
constexpr int kShard0Last = -3;  // only the last rank of shard 0's group (shard 1: none)

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  bool decay;
  bool expert;
  int grad_on;  // kAll, kNone, kShard0Last, or the only job rank with a gradient
};

// Interleaved replicated and expert parameters; sizes not divisible by 2 or 4 (padding).
const std::vector<Spec>& specs() {
  static const std::vector<Spec> s = {
      {"embed", {37, 11}, true, false, kAll}, {"experts.w1", {2, 9, 7}, true, true, kAll},
      {"norm", {11}, false, false, kAll},     {"unused", {5, 3}, true, false, kNone},
      {"lonely", {13}, false, false, 1},      {"experts.bias", {9}, false, true, kShard0Last},
      {"big", {3001}, true, false, kAll},     {"experts.w2", {2, 7, 9}, true, true, kAll},
  };
  return s;
}

int64_t numel(const Spec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n;
}

at::Tensor seeded(uint64_t seed, const std::vector<int64_t>& shape, bool dyadic) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (dyadic) return at::randint(-8, 9, shape, gen, at::TensorOptions().dtype(at::kFloat)) / 4;
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

struct Job {
  int world = 1;
  int shard(int q) const { return q % 2; }
  std::vector<int> group_ranks(const Spec& s, int q) const {
    std::vector<int> out;
    for (int p = 0; p < world; ++p)
      if (!s.expert || shard(p) == shard(q)) out.push_back(p);
    return out;
  }
  bool has_grad(const Spec& s, int q) const {
    if (s.grad_on == kAll) return true;
    if (s.grad_on == kNone) return false;
    if (s.grad_on == kShard0Last) return shard(q) == 0 && q == group_ranks(s, q).back();
    return q == s.grad_on;
  }
  at::Tensor init(size_t k, int q) const {
    return seeded(1000 + 10 * k + (specs()[k].expert ? shard(q) : 0), specs()[k].shape, false);
  }
  at::Tensor grad(int step, int q, size_t k) const {
    return seeded(100000 + 10000 * step + 100 * q + k, specs()[k].shape, true);
  }
  // The reference model: every replicated parameter once, every expert parameter per shard.
  struct Entry {
    size_t spec;
    int shard;
    std::string name;
  };
  std::vector<Entry> reference_entries() const {
    std::vector<Entry> out;
    for (size_t k = 0; k < specs().size(); ++k) {
      if (!specs()[k].expert) out.push_back({k, 0, specs()[k].name});
      else
        for (int s = 0; s < std::min(world, 2); ++s) out.push_back({k, s, specs()[k].name + "@" + std::to_string(s)});
    }
    return out;
  }
};

struct Worst {
  double param = 0, moment = 0, norm = 0;
};

// Five steps of ShardedAdamW on this rank against AdamW on the reference model, with a state
// round trip through state() after step 2 and one through the reference's AdamW::state() after
// step 4. `max_norm` 0: no clipping, everything bit-equal; > 0: clipping in every step.
Worst run_against_reference(DistContext& job, const std::vector<DistContext*>& group_of, double max_norm,
                            double bucket_mb, const std::string& label) {
  torch::NoGradGuard no_grad;
  const Job J{job.world_size()};
  const int me = job.rank();
  const auto& S = specs();
  const bool exact = max_norm == 0;

  std::vector<NamedParameter> mine;
  for (size_t k = 0; k < S.size(); ++k) mine.push_back({S[k].name, J.init(k, me).requires_grad_(), S[k].decay});
  const auto entries = J.reference_entries();
  std::vector<NamedParameter> ref;
  for (const auto& e : entries) ref.push_back({e.name, J.init(e.spec, e.shard).requires_grad_(), S[e.spec].decay});
  // Reference entry of my parameter k.
  auto ref_of = [&](size_t k) {
    for (size_t j = 0; j < entries.size(); ++j)
      if (entries[j].spec == k && entries[j].shard == (S[k].expert ? J.shard(me) : 0)) return j;
    ADD_FAILURE() << "no reference entry for " << S[k].name;
    return size_t{0};
  };
  // The reference's state under my parameters' names.
  auto mine_from_ref = [&](const TensorMap& r) {
    TensorMap out;
    for (size_t k = 0; k < S.size(); ++k)
      for (const char* suffix : {".exp_avg", ".exp_avg_sq", ".step"})
        out[S[k].name + suffix] = r.at(entries[ref_of(k)].name + suffix);
    return out;
  };

  auto opt = std::make_unique<ShardedAdamW>(mine, group_of, test_options(), bucket_mb);
  AdamW reference(ref, test_options());
  Worst worst;
  int64_t adamw_bytes = 0, local_bytes = 0, ideal = 0, slack = 0;
  for (size_t k = 0; k < S.size(); ++k) {
    const int64_t g = static_cast<int64_t>(J.group_ranks(S[k], me).size());
    local_bytes += 8 * numel(S[k]);
    ideal += 8 * numel(S[k]) / g;
    slack += 8;  // a bucket's chunk is rounded up by < 1 element, and there are at most as many buckets
  }
  for (const auto& p : ref) adamw_bytes += 8 * p.param.numel();

  for (int step = 0; step < 5; ++step) {
    SCOPED_TRACE(label + " step " + std::to_string(step));
    if (step == 2) {
      const TensorMap saved = opt->state();
      opt = std::make_unique<ShardedAdamW>(mine, group_of, test_options(), bucket_mb);
      opt->load_state(saved, "round trip");
    }
    if (step == 4) {
      opt = std::make_unique<ShardedAdamW>(mine, group_of, test_options(), bucket_mb);
      opt->load_state(mine_from_ref(reference.state()), "the reference's state");
    }
    for (size_t k = 0; k < S.size(); ++k)
      mine[k].param.mutable_grad() = J.has_grad(S[k], me) ? J.grad(step, me, k) : at::Tensor();
    for (size_t j = 0; j < entries.size(); ++j) {
      const Spec& s = S[entries[j].spec];
      at::Tensor sum;
      for (int q = 0; q < J.world; ++q) {
        if ((s.expert && J.shard(q) != entries[j].shard) || !J.has_grad(s, q)) continue;
        const at::Tensor g = J.grad(step, q, entries[j].spec);
        sum = sum.defined() ? sum + g : g;
      }
      ref[j].param.mutable_grad() = sum;
    }

    opt->reduce_gradients();
    for (const auto& p : mine) EXPECT_FALSE(p.param.grad().defined()) << p.name << ": not freed";
    const at::Tensor norm = opt->clip_grad_norm(max_norm, job);
    opt->step(lr_at(step));
    const at::Tensor ref_norm = coe::clip_grad_norm(ref, max_norm);
    reference.step(lr_at(step));

    EXPECT_EQ(norm.scalar_type(), at::kFloat);
    EXPECT_EQ(norm.dim(), 0);
    const double dn = rel_diff(norm, ref_norm);
    worst.norm = std::max(worst.norm, dn);
    EXPECT_LE(dn, 1e-6) << norm.item<double>() << " vs " << ref_norm.item<double>();
    if (max_norm > 0) EXPECT_GT(ref_norm.item<double>(), 2 * max_norm) << "clipping must be active";
    for (size_t k = 0; k < S.size(); ++k) {
      const double d = rel_diff(mine[k].param, ref[ref_of(k)].param);
      worst.param = std::max(worst.param, d);
      if (exact) EXPECT_EQ(d, 0) << S[k].name;
      else EXPECT_LE(d, 1e-7) << S[k].name;
    }
    const TensorMap got = opt->state(), want = mine_from_ref(reference.state());
    // EXPECT only: every rank must go on issuing the same collectives.
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [key, w] : want) {
      if (!got.count(key)) {
        ADD_FAILURE() << "missing " << key;
        continue;
      }
      const at::Tensor& g = got.at(key);
      EXPECT_EQ(g.scalar_type(), w.scalar_type()) << key;
      EXPECT_EQ(g.sizes(), w.sizes()) << key;
      EXPECT_EQ(g.device(), w.device()) << key;
      if (w.scalar_type() == at::kLong) {
        EXPECT_EQ(g.item<int64_t>(), w.item<int64_t>()) << key;
        continue;
      }
      const double d = rel_diff(g, w);
      worst.moment = std::max(worst.moment, d);
      if (exact) EXPECT_EQ(d, 0) << key;
      else EXPECT_LE(d, 1e-6) << key;
    }
  }
  // Step counts: "unused" never advanced; "experts.bias" only in shard 0's group.
  const TensorMap st = opt->state();
  EXPECT_EQ(st.at("unused.step").item<int64_t>(), 0);
  EXPECT_EQ(st.at("lonely.step").item<int64_t>(), 5);
  EXPECT_EQ(st.at("experts.bias.step").item<int64_t>(), J.shard(me) == 0 ? 5 : 0);
  EXPECT_TRUE(at::equal(mine[3].param, J.init(3, me))) << "a parameter without gradients must not move";

  // Moments: every element once over the job, about 1 / group size of them on each rank.
  const int64_t bytes = opt->moment_bytes();
  EXPECT_EQ(job.all_reduce_sum(std::vector<int64_t>{bytes})[0], adamw_bytes);
  EXPECT_LE(bytes, ideal + slack);
  EXPECT_GE(bytes, ideal - (J.world - 1) * slack);
  if (me == 0)
    std::printf("RESULT %d ranks, %s: rank 0 holds %lld moment bytes, AdamW %lld (the whole job: %lld)\n", J.world,
                label.c_str(), static_cast<long long>(bytes), static_cast<long long>(local_bytes),
                static_cast<long long>(adamw_bytes));

  // Non-finite values: a moment on every rank, then a parameter on one rank only.
  EXPECT_EQ(opt->first_non_finite(job), "");
  TensorMap bad = opt->state();
  bad["norm.exp_avg_sq"] = at::full({11}, std::numeric_limits<float>::infinity());
  opt->load_state(bad, "injected");
  EXPECT_EQ(opt->first_non_finite(job), "norm's AdamW exp_avg_sq");
  if (me == J.world - 1) mine[7].param.fill_(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(opt->first_non_finite(job), "norm's AdamW exp_avg_sq");
  bad["norm.exp_avg_sq"] = at::zeros({11});
  opt->load_state(bad, "repaired");
  EXPECT_EQ(opt->first_non_finite(job), "experts.w2");
  return worst;
}

TEST(ZeroWorker, Run) {
  const char* role = std::getenv("COE_ZERO_TEST_ROLE");
  if (!role || !*role) GTEST_SKIP() << "only run as a rank of the tests below";
  coe::DistOptions options;
  options.timeout_s = 60;
  DistContext job(coe::dist_env_from_process(), options);
  const int me = job.rank(), W = job.world_size();
  std::vector<int> mates;
  for (int q = me % 2; q < W; q += 2) mates.push_back(q);
  // Groups are created by every rank in the same order: one name, disjoint members.
  auto expert_data = job.group("expert_data", mates);
  std::vector<DistContext*> group_of;
  for (const auto& s : specs()) group_of.push_back(s.expert ? expert_data.get() : &job);

  // ~262 floats per bucket: "big" alone and several other buckets; then one bucket per group.
  const Worst exact = run_against_reference(job, group_of, 0, 0.001, "no clipping, small buckets");
  const Worst clipped = run_against_reference(job, group_of, 5.0, 25, "clipping, one bucket per group");
  if (me == 0) {
    std::printf("RESULT %d ranks, no clipping: max relative difference params %.3g, moments %.3g, norm %.3g\n", W,
                exact.param, exact.moment, exact.norm);
    std::printf("RESULT %d ranks, clipping: max relative difference params %.3g, moments %.3g, norm %.3g\n", W,
                clipped.param, clipped.moment, clipped.norm);
  }
  std::fflush(stdout);
  job.finish();
}

// ---- the launching side ------------------------------------------------------------------------

void launch(int world) {
  const fs::path dir = coe::test::make_temp_dir("dist-zero");
  const int port = coe::test::free_port();
  std::vector<coe::test::RankProcess> procs;
  for (int r = 0; r < world; ++r) {
    auto env = coe::test::rank_env(r, world, port);
    env["COE_ZERO_TEST_ROLE"] = "rank";
    env["OMP_NUM_THREADS"] = "1";
    procs.push_back(coe::test::spawn_process({"/proc/self/exe", "--gtest_filter=ZeroWorker.Run"}, env,
                                             dir / ("rank" + std::to_string(r) + ".log")));
  }
  coe::test::wait_all(procs, 120);
  std::string logs;
  for (int r = 0; r < world; ++r)
    logs +=
        "---- rank " + std::to_string(r) + " (exit " + std::to_string(procs[r].exit_code) + ")\n" + procs[r].output();
  for (const auto& p : procs) EXPECT_EQ(p.exit_code, 0) << logs;
  // The figures rank 0 measured, for the log.
  std::istringstream lines(procs[0].output());
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("RESULT ", 0) == 0) std::printf("%s\n", line.c_str());
  fs::remove_all(dir);
}

TEST(DistZero, TwoRanksEqualAdamWOnTheSummedGradients) { launch(2); }
TEST(DistZero, FourRanksWithExpertGroupsEqualAdamWOnTheSummedGradients) { launch(4); }

// ---- one process: AdamW and train_step.h's clip_grad_norm bit for bit ---------------------------

TEST(ShardedAdamWSingle, EqualsAdamWBitForBit) {
  torch::NoGradGuard no_grad;
  DistContext single;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"a", {17, 5}}, {"b", {301}}, {"c", {3}}, {"never", {4, 4}}, {"sometimes", {7}}, {"d", {2, 3, 4}}};
  std::vector<NamedParameter> ours, theirs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const at::Tensor init = seeded(50 + i, shapes[i].second, false);
    ours.push_back({shapes[i].first, init.clone().requires_grad_(), i % 2 == 0});
    theirs.push_back({shapes[i].first, init.clone().requires_grad_(), i % 2 == 0});
  }
  auto make = [&] {
    return std::make_unique<ShardedAdamW>(ours, std::vector<DistContext*>(ours.size(), &single), test_options(),
                                          /*bucket_mb=*/0.0005);
  };
  auto opt = make();
  AdamW adamw(theirs, test_options());
  int64_t total = 0;
  for (const auto& p : ours) total += p.param.numel();
  EXPECT_EQ(opt->moment_bytes(), 8 * total);
  EXPECT_EQ(opt->parameters().size(), ours.size());
  EXPECT_EQ(opt->options().weight_decay, 0.1);

  for (int step = 0; step < 8; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    if (step == 5) {  // a round trip, as a resumed run
      const TensorMap saved = opt->state();
      opt = make();
      opt->load_state(saved, "round trip");
    }
    for (size_t i = 0; i < ours.size(); ++i) {
      const bool has = shapes[i].first != "never" && (shapes[i].first != "sometimes" || step % 3 == 1);
      const at::Tensor g = has ? seeded(900 + 10 * step + i, shapes[i].second, false) * (step + 1) : at::Tensor();
      ours[i].param.mutable_grad() = g.defined() ? g.clone() : g;
      theirs[i].param.mutable_grad() = g.defined() ? g.clone() : g;
    }
    // Clipping active in odd steps, off (max_norm 0) or inactive (a large max_norm) in even ones.
    const double max_norm = step % 2 == 1 ? 1.0 : (step % 4 == 0 ? 0.0 : 1e6);
    opt->reduce_gradients();
    const at::Tensor norm = opt->clip_grad_norm(max_norm, single);
    const at::Tensor ref_norm = coe::clip_grad_norm(theirs, max_norm);
    EXPECT_TRUE(at::equal(norm, ref_norm)) << norm.item<float>() << " vs " << ref_norm.item<float>();
    if (step % 2 == 1) EXPECT_GT(ref_norm.item<double>(), 2.0);
    opt->step(lr_at(step));
    adamw.step(lr_at(step));
    for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(at::equal(ours[i].param, theirs[i].param)) << ours[i].name;
    const TensorMap got = opt->state(), want = adamw.state();
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [key, w] : want) EXPECT_TRUE(at::equal(got.at(key), w)) << key;
    opt->zero_grad();
    adamw.zero_grad();
  }
  EXPECT_EQ(adamw.state().at("never.step").item<int64_t>(), 0);
  EXPECT_EQ(opt->state().at("sometimes.step").item<int64_t>(), 3);

  // Non-finite values and load_state's errors: AdamW's wording.
  EXPECT_EQ(opt->first_non_finite(single), "");
  ours[1].param[7] = std::numeric_limits<float>::quiet_NaN();
  theirs[1].param[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(opt->first_non_finite(single), adamw.first_non_finite());
  EXPECT_EQ(opt->first_non_finite(single), "b");
  TensorMap st = adamw.state();
  st.erase("c.exp_avg");
  EXPECT_EQ(error_of([&] { opt->load_state(st, "x.safetensors"); }),
            error_of([&] { adamw.load_state(st, "x.safetensors"); }));
  EXPECT_EQ(error_of([&] { opt->load_state(st, "x.safetensors"); }),
            "x.safetensors: missing optimizer tensor 'c.exp_avg'");
  st = adamw.state();
  st["d.exp_avg_sq"] = at::zeros({4, 3, 2});
  EXPECT_EQ(error_of([&] { opt->load_state(st, "x.safetensors"); }),
            error_of([&] { adamw.load_state(st, "x.safetensors"); }));
  st = adamw.state();
  st["a.step"] = at::zeros({2}, at::kLong);
  EXPECT_EQ(error_of([&] { opt->load_state(st, "x.safetensors"); }),
            error_of([&] { adamw.load_state(st, "x.safetensors"); }));
  st = adamw.state();
  st["z.exp_avg"] = at::zeros({1});
  EXPECT_EQ(error_of([&] { opt->load_state(st, "x.safetensors"); }),
            "x.safetensors: unexpected optimizer tensor 'z.exp_avg' (not a parameter of this model)");

  // Construction errors.
  EXPECT_EQ(error_of([&] { (void)ShardedAdamW(ours, {&single}, test_options()); }),
            "ShardedAdamW: 1 groups for 6 parameters");
  std::vector<NamedParameter> half = {{"h", at::zeros({3}, at::kHalf), true}};
  EXPECT_EQ(error_of([&] { (void)ShardedAdamW(half, {&single}, test_options()); }),
            "ShardedAdamW: parameter 'h' must be contiguous float32 (master weights)");
}

}  // namespace
