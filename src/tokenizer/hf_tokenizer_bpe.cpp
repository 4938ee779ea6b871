// The BPE model: HF's merge loop (tokenizers/src/models/bpe/word.rs `merge_all`) over a linked
// list of symbols with a min-heap of (rank, position), O(n log n) per word, and a sharded cache
// of word -> ids shared by all threads.
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include "coe/util/error.h"

#include <fmt/format.h>

#include <mutex>
#include <queue>

namespace coe::hf {

namespace {

constexpr size_t kCacheShards = 64;
constexpr size_t kCacheShardCapacity = 4096;  // words (~256K in all); a full shard is cleared
constexpr size_t kMaxCachedWordBytes = 256;   // long words are rare and would bloat the cache

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Symbol {
  int32_t id;
  int32_t prev, next;  // neighbours in the word, -1 at the ends
  uint32_t len;        // bytes covered; 0 marks a symbol merged into its left neighbour
};

struct Merge {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
};

// std::priority_queue pops the largest element: "larger" = lower rank, then lower position.
struct MergeOrder {
  bool operator()(const Merge& a, const Merge& b) const { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; }
};

}  // namespace

// Cache-line aligned so that threads locking neighbouring shards do not contend.
struct alignas(64) BpeModel::CacheShard {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::function<ConfigPath(size_t)>& merge_where, const ConfigPath& unk_where)
    : vocab_(std::move(vocab)), options_(std::move(options)), cache_(new CacheShard[kCacheShards]) {
  const size_t prefix_len = options_.continuing_subword_prefix ? options_.continuing_subword_prefix->size() : 0;
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto l = vocab_.find(left);
    if (l == vocab_.end()) merge_where(rank).fail(fmt::format("token '{}' is not in the vocabulary", left));
    auto r = vocab_.find(right);
    if (r == vocab_.end()) merge_where(rank).fail(fmt::format("token '{}' is not in the vocabulary", right));
    if (right.size() < prefix_len)
      merge_where(rank).fail(fmt::format("token '{}' is shorter than continuing_subword_prefix", right));
    // The right part loses its continuing_subword_prefix in the merged token, as in HF.
    const std::string merged = left + right.substr(prefix_len);
    auto m = vocab_.find(merged);
    if (m == vocab_.end()) merge_where(rank).fail(fmt::format("merged token '{}' is not in the vocabulary", merged));
    // A repeated pair takes its last rank, like HF's HashMap built from the list.
    merges_[pair_key(l->second, r->second)] = MergeRule{static_cast<uint32_t>(rank), m->second};
  }
  if (options_.unk_token) {
    if (auto it = vocab_.find(*options_.unk_token); it != vocab_.end()) unk_id_ = it->second;
    else unk_where.fail(fmt::format("unk_token '{}' is not in the vocabulary", *options_.unk_token));
  }
}

BpeModel::~BpeModel() = default;

std::optional<int32_t> BpeModel::lookup(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() > kMaxCachedWordBytes) {
    merge_word(word, ids);
    return;
  }
  std::string key(word);
  CacheShard& shard = cache_[std::hash<std::string>{}(key) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (auto it = shard.words.find(key); it != shard.words.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids.size();
  merge_word(word, ids);
  std::vector<int32_t> word_ids(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end());
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.words.size() >= kCacheShardCapacity) shard.words.clear();
  shard.words.emplace(std::move(key), std::move(word_ids));
}

void BpeModel::merge_word(std::string_view raw_word, std::vector<int32_t>& ids) const {
  std::string mapped;
  std::string_view word = raw_word;
  if (byte_level_input_) {
    const auto& chars = byte_level_chars();
    mapped.reserve(raw_word.size() * 2);
    for (char c : raw_word) mapped += chars[static_cast<unsigned char>(c)];
    word = mapped;
  }
  if (options_.ignore_merges) {
    if (auto id = lookup(std::string(word))) {
      ids.push_back(*id);
      return;
    }
  }

  // One symbol per character (BPE.merge_word), with HF's unknown-character handling.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, size_t len) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, static_cast<uint32_t>(len)});
  };
  std::optional<std::pair<int32_t, size_t>> unk;  // pending unknown run (id, bytes)
  std::string s;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    pos += utf8_length(static_cast<unsigned char>(word[pos]));
    const size_t byte_len = pos - begin;
    s.assign(word.substr(begin, byte_len));
    if (begin > 0 && options_.continuing_subword_prefix) s.insert(0, *options_.continuing_subword_prefix);
    if (pos == word.size() && options_.end_of_word_suffix) s += *options_.end_of_word_suffix;

    if (auto id = lookup(s)) {
      if (unk) {
        add(unk->first, unk->second);
        unk.reset();
      }
      add(*id, byte_len);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> byte_ids;
      for (char c : s) {
        auto id = lookup(fmt::format("<0x{:02X}>", static_cast<unsigned char>(c)));
        if (!id) break;
        byte_ids.push_back(*id);
      }
      if (byte_ids.size() == s.size()) {
        for (int32_t id : byte_ids) add(id, 1);
        continue;
      }
    }
    if (unk_id_) {
      if (unk && options_.fuse_unk) {
        unk->second += byte_len;
      } else {
        if (unk) add(unk->first, unk->second);
        unk = std::make_pair(*unk_id_, byte_len);
      }
    }
    // Without an unk token HF drops the character silently; so do we.
  }
  if (unk) add(unk->first, unk->second);

  auto rule_for = [&](int32_t left, int32_t right) -> const MergeRule* {
    auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge, std::vector<Merge>, MergeOrder> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    if (const MergeRule* rule = rule_for(symbols[i].id, symbols[i + 1].id))
      queue.push({rule->rank, static_cast<int32_t>(i), rule->new_id});

  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& current = symbols[static_cast<size_t>(top.pos)];
    if (current.len == 0 || current.next == -1) continue;
    const Symbol right = symbols[static_cast<size_t>(current.next)];
    // Skip stale entries: the pair at this position changed since it was queued. Like HF, only
    // the resulting id is compared.
    const MergeRule* rule = rule_for(current.id, right.id);
    if (!rule || rule->new_id != top.new_id) continue;

    symbols[static_cast<size_t>(current.next)].len = 0;
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;

    if (current.prev >= 0) {
      if (const MergeRule* r = rule_for(symbols[static_cast<size_t>(current.prev)].id, current.id))
        queue.push({r->rank, current.prev, r->new_id});
    }
    if (current.next >= 0) {
      if (const MergeRule* r = rule_for(current.id, symbols[static_cast<size_t>(current.next)].id))
        queue.push({r->rank, top.pos, r->new_id});
    }
  }
  for (const Symbol& symbol : symbols)
    if (symbol.len != 0) ids.push_back(symbol.id);
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
