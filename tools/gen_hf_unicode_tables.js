#!/usr/bin/env node
// Generates src/data/hf_unicode_tables.cpp: every Unicode character property coe's HF tokenizer
// uses, read off Hugging Face `tokenizers` itself (npm package, the Rust library through its
// node bindings) by probing all code points, so that coe agrees with it character by character.
//
//   npm install --prefix build/hf-oracle tokenizers@0.23.2
//   node tools/gen_hf_unicode_tables.js --module build/hf-oracle > src/data/hf_unicode_tables.cpp
//
// What is probed, and through which part of HF (docs/tokenizer.md, "Unicode versions"):
//   - regex classes of Split / ByteLevel patterns (Oniguruma through the onig crate): the 30
//     general categories \p{Lu} .. \p{Cn}, \s, \w, \d, each matched against every code point;
//   - `\w` and `\s` of the Rust regex crate (single_word, lstrip/rstrip of added tokens), through
//     added tokens with those flags;
//   - Rust's char::is_numeric (the Digits pre-tokenizer), through Digits;
//   - NFD/NFKD of every code point, the order of canonical combining classes (by how NFD reorders
//     pairs of non-starters) and the canonical compositions (from NFC), through HF's normalizers
//     (the unicode-normalization-alignments crate).
// Surrogates (U+D800..U+DFFF) cannot occur in UTF-8 text and are not probed. The probes print a
// summary to stderr, including which Unicode version each table corresponds to (newest
// characters it knows from a list of sentinel characters below).
'use strict';
const path = require('path');

let moduleDir = process.env.COE_HF_ORACLE || '';
for (let i = 2; i < process.argv.length; ++i) {
  if (process.argv[i] === '--module' && i + 1 < process.argv.length) moduleDir = process.argv[++i];
  else {
    process.stderr.write(`usage: node tools/gen_hf_unicode_tables.js --module DIR > src/data/hf_unicode_tables.cpp\n`);
    process.exit(2);
  }
}
if (!moduleDir) {
  process.stderr.write('gen_hf_unicode_tables: --module DIR (npm install --prefix DIR tokenizers@0.23.2) is required\n');
  process.exit(2);
}
const hf = require(path.resolve(moduleDir, 'node_modules', 'tokenizers'));
const hfVersion = require(path.resolve(moduleDir, 'node_modules', 'tokenizers', 'package.json')).version;

const MAX = 0x110000;
const isSurrogate = (cp) => cp >= 0xd800 && cp <= 0xdfff;
const ALL = [];
for (let cp = 0; cp < MAX; ++cp) if (!isSurrogate(cp)) ALL.push(cp);
const fromCps = (cps) => {
  const parts = [];
  for (let i = 0; i < cps.length; i += 4096) parts.push(String.fromCodePoint(...cps.slice(i, i + 4096)));
  return parts.join('');
};
const toCps = (s) => Array.from(s, (c) => c.codePointAt(0));
const hex = (cp) => 'U+' + cp.toString(16).toUpperCase().padStart(4, '0');
function fail(message) {
  process.stderr.write(`gen_hf_unicode_tables: ${message}\n`);
  process.exit(1);
}
const log = (message) => process.stderr.write(message + '\n');

// ---- tokenizers built for probing ------------------------------------------------------------

const byteAlphabet = hf.byteLevelAlphabet();
function makeTokenizer({preTokenizer = null, normalizer = null, added = []}) {
  const vocab = {};
  byteAlphabet.forEach((c, i) => (vocab[c] = i));
  const json = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer,
    pre_tokenizer: preTokenizer, post_processor: null,
    decoder: {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false},
    model: {type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
            fuse_unk: false, byte_fallback: false, vocab, merges: []},
  };
  return hf.Tokenizer.fromString(JSON.stringify(json));
}

// Code points of `cps` (in order) matched by the single-character regex `pattern` in Oniguruma:
// a Split with behaviour Removed leaves exactly the characters that do not match.
function regexMembers(pattern) {
  const pre = makeTokenizer({preTokenizer: {type: 'Split', pattern: {Regex: pattern}, behavior: 'Removed', invert: false}})
                  .getPreTokenizer();
  const member = new Uint8Array(MAX);
  const CHUNK = 1 << 16;
  for (let start = 0; start < ALL.length; start += CHUNK) {
    const cps = ALL.slice(start, start + CHUNK);
    for (const cp of cps) member[cp] = 1;
    for (const [, [b, e]] of pre.preTokenizeString(fromCps(cps))) for (let i = b; i < e; ++i) member[cps[i]] = 0;
  }
  return member;
}

// Runs `probe(cp)` -> [text, marker offset] for every code point through `encode`, chunked.
async function encodeProbes(tokenizer, cps, makeText) {
  const results = [];
  const CHUNK = 1 << 14;
  for (let start = 0; start < cps.length; start += CHUNK) {
    const chunk = cps.slice(start, start + CHUNK);
    const encodings = await tokenizer.encodeBatch(chunk.map(makeText), {addSpecialTokens: false});
    for (const e of encodings) results.push({ids: e.getIds(), offsets: e.getOffsets()});
  }
  return results;
}

// Applies normalizer `name` to each of `pieces` (arrays of code points), returning arrays. One
// call per chunk, pieces separated by U+0001 (a starter that never composes or decomposes);
// pieces holding U+0001 themselves are normalized one by one.
function normalizeEach(name, pieces) {
  const normalizer = {nfc: hf.nfcNormalizer, nfd: hf.nfdNormalizer, nfkc: hf.nfkcNormalizer, nfkd: hf.nfkdNormalizer}[name]();
  const out = new Array(pieces.length);
  const batched = [];
  pieces.forEach((p, i) => {
    if (p.includes(1)) out[i] = toCps(normalizer.normalizeString(fromCps(p)));
    else batched.push(i);
  });
  const CHUNK = 1 << 15;
  for (let start = 0; start < batched.length; start += CHUNK) {
    const chunk = batched.slice(start, start + CHUNK);
    const parts = normalizer.normalizeString(chunk.map((i) => fromCps(pieces[i])).join('\u0001')).split('\u0001');
    if (parts.length !== chunk.length) fail(`${name}: separator count changed`);
    parts.forEach((p, k) => (out[chunk[k]] = toCps(p)));
  }
  return out;
}

// ---- sentinels: characters new in each Unicode version ---------------------------------------

// For naming the version a table corresponds to: the newest version whose characters it knows.
const letterSentinels = [
  ['9.0', 0x1e900], ['10.0', 0x11a00], ['11.0', 0x10d00], ['12.0', 0x1e100], ['13.0', 0x10e80],
  ['14.0', 0x10f70], ['15.0', 0x11f04], ['15.1', 0x2ebf0], ['16.0', 0x10d4a], ['17.0', 0x323b0],
];
const digitSentinels = [
  ['9.0', 0x1e950], ['10.0', 0x11d50], ['11.0', 0x10d30], ['12.0', 0x1e140], ['13.0', 0x11950],
  ['14.0', 0x16ac0], ['15.0', 0x11f50], ['16.0', 0x10d40], ['17.0', 0x11de0],
];
// Non-starters (canonical combining class != 0) new in each version.
const markSentinels = [
  ['9.0', 0x1e944], ['10.0', 0x1df6], ['11.0', 0x08d3], ['12.0', 0x1e130], ['13.0', 0x1abf],
  ['14.0', 0x08ca], ['15.0', 0x1e4ec], ['16.0', 0x10d69],
];
function newestKnown(sentinels, known) {
  let newest = 'older than ' + sentinels[0][0];
  for (const [version, cp] of sentinels) {
    if (!known(cp)) break;
    newest = version;
  }
  return newest;
}

// ---- probes ----------------------------------------------------------------------------------

const CATEGORIES = ['Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe',
                    'Pi', 'Pf', 'Po', 'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Cs', 'Co', 'Cn'];

async function main() {
  log(`probing HF tokenizers ${hfVersion} from ${moduleDir}`);
  // Regex (Oniguruma) general categories.
  const category = new Int8Array(MAX).fill(-1);
  for (let c = 0; c < CATEGORIES.length; ++c) {
    const member = regexMembers(`\\p{${CATEGORIES[c]}}`);
    for (const cp of ALL) {
      if (!member[cp]) continue;
      if (category[cp] >= 0) fail(`${hex(cp)} is in both \\p{${CATEGORIES[category[cp]]}} and \\p{${CATEGORIES[c]}}`);
      category[cp] = c;
    }
  }
  for (const cp of ALL) if (category[cp] < 0) fail(`${hex(cp)} is in no general category`);
  for (let cp = 0xd800; cp <= 0xdfff; ++cp) category[cp] = CATEGORIES.indexOf('Cs');
  // The one-letter classes are the unions of their subcategories.
  for (const major of 'LMNPSZC') {
    const member = regexMembers(`\\p{${major}}`);
    for (const cp of ALL)
      if (!!member[cp] !== (CATEGORIES[category[cp]][0] === major)) fail(`\\p{${major}} differs from its subcategories at ${hex(cp)}`);
  }
  const regexSpace = regexMembers('\\s');
  const regexWord = regexMembers('\\w');
  const regexDigit = regexMembers('\\d');
  const regexVersion = newestKnown(letterSentinels, (cp) => CATEGORIES[category[cp]] !== 'Cn');
  log(`regex (Oniguruma) general categories: Unicode ${regexVersion}`);

  // Rust regex crate \w and \s: added tokens with single_word and lstrip.
  const word = makeTokenizer({added: [{id: 256, content: '\u0002\u0003', single_word: true, lstrip: false, rstrip: false,
                                       normalized: false, special: true}]});
  const rustWord = new Uint8Array(MAX);
  // "\u0001 c \u0002\u0003": the token is dropped when c is a word character.
  (await encodeProbes(word, ALL, (cp) => '\u0001' + String.fromCodePoint(cp) + '\u0002\u0003'))
      .forEach((r, i) => (rustWord[ALL[i]] = r.ids.includes(256) ? 0 : 1));
  const strip = makeTokenizer({added: [{id: 256, content: '\u0002\u0003', single_word: false, lstrip: true, rstrip: false,
                                        normalized: false, special: true}]});
  const rustSpace = new Uint8Array(MAX);
  // "x c \u0002\u0003": the token's span starts at c when c is whitespace.
  (await encodeProbes(strip, ALL, (cp) => 'x' + String.fromCodePoint(cp) + '\u0002\u0003')).forEach((r, i) => {
    const at = r.ids.indexOf(256);
    if (at < 0) fail(`lstrip probe lost its token at ${hex(ALL[i])}`);
    rustSpace[ALL[i]] = r.offsets[at][0] === 1 ? 1 : 0;
  });
  // Rust char::is_numeric: Digits(individual_digits) isolates each numeric character.
  const digits = makeTokenizer({preTokenizer: {type: 'Digits', individual_digits: true}}).getPreTokenizer();
  const rustNumeric = new Uint8Array(MAX);
  {
    const CHUNK = 1 << 16;
    for (let start = 0; start < ALL.length; start += CHUNK) {
      const cps = ALL.slice(start, start + CHUNK);
      const text = cps.map((cp) => 'x' + String.fromCodePoint(cp)).join('');
      for (const [, [b]] of digits.preTokenizeString(text)) if (b % 2 === 1) rustNumeric[cps[(b - 1) / 2]] = 1;
    }
  }
  log(`rust regex \\w: Unicode ${newestKnown(letterSentinels, (cp) => rustWord[cp])}; ` +
      `char::is_numeric: Unicode ${newestKnown(digitSentinels, (cp) => rustNumeric[cp])}`);

  // Normalization: full decompositions of every code point.
  const singles = ALL.map((cp) => [cp]);
  const nfd = normalizeEach('nfd', singles);
  const nfkd = normalizeEach('nfkd', singles);
  const nfc = normalizeEach('nfc', singles);
  const nfkc = normalizeEach('nfkc', singles);
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const isHangulSyllable = (cp) => cp >= 0xac00 && cp <= 0xd7a3;
  const hangul = (cp) => {
    const s = cp - 0xac00, l = 0x1100 + Math.floor(s / 588), v = 0x1161 + Math.floor((s % 588) / 28), t = 0x11a7 + (s % 28);
    return t === 0x11a7 ? [l, v] : [l, v, t];
  };
  const canonical = new Map(), compat = new Map();
  ALL.forEach((cp, i) => {
    if (isHangulSyllable(cp)) {
      if (!same(nfd[i], hangul(cp)) || !same(nfkd[i], hangul(cp))) fail(`Hangul ${hex(cp)} is not decomposed algorithmically`);
      return;
    }
    if (!same(nfd[i], [cp])) canonical.set(cp, nfd[i]);
    if (!same(nfkd[i], nfd[i])) compat.set(cp, nfkd[i]);
  });

  // Non-starters among the fully decomposed characters: c is one iff NFD reorders it against
  // U+0334 (c, U+0334: swapped iff class(c) > class(U+0334)) or U+0345 (U+0345, c: swapped iff
  // 0 < class(c) < class(U+0345)); together these catch every non-zero class.
  const stable = ALL.filter((cp, i) => same(nfd[i], [cp]));
  const swapped = (pairs) => normalizeEach('nfd', pairs).map((out, k) => out[0] !== pairs[k][0]);
  const afterLow = swapped(stable.map((cp) => [cp, 0x334]));
  const beforeHigh = swapped(stable.map((cp) => [0x345, cp]));
  const nonStarters = stable.filter((cp, k) => afterLow[k] || beforeHigh[k]);
  // The order of their classes, from NFD of every ordered pair: rank = dense rank of the number
  // of non-starters with a lower class.
  const n = nonStarters.length;
  const pairs = [];
  for (const a of nonStarters) for (const b of nonStarters) pairs.push([a, b]);
  const greater = swapped(pairs);  // pairs[a * n + b] swapped iff class(a) > class(b)
  const below = nonStarters.map((_, a) => {
    let count = 0;
    for (let b = 0; b < n; ++b) count += greater[a * n + b] ? 1 : 0;
    return count;
  });
  const distinct = [...new Set(below)].sort((x, y) => x - y);
  const order = new Map(nonStarters.map((cp, a) => [cp, distinct.indexOf(below[a]) + 1]));
  for (let a = 0; a < n; ++a)
    for (let b = 0; b < n; ++b)
      if (greater[a * n + b] !== (order.get(nonStarters[a]) > order.get(nonStarters[b])))
        fail(`combining classes of ${hex(nonStarters[a])} and ${hex(nonStarters[b])} are not totally ordered`);
  const normalizerVersion = newestKnown(markSentinels, (cp) => order.has(cp));
  log(`normalizer: ${canonical.size} canonical and ${compat.size} compatibility decompositions, ` +
      `${n} non-starters in ${distinct.length} classes: Unicode ${normalizerVersion}`);

  // Canonical compositions: every character that NFC keeps although it decomposes is a primary
  // composite; it composes from NFC(all but the last character of its NFD) and that last character.
  const composites = ALL.filter((cp, i) => !isHangulSyllable(cp) && canonical.has(cp) && same(nfc[i], [cp]));
  const heads = normalizeEach('nfc', composites.map((cp) => canonical.get(cp).slice(0, -1)));
  const compositions = composites.map((cp, k) => {
    if (heads[k].length !== 1) fail(`cannot find the first part of the composition of ${hex(cp)}`);
    const d = canonical.get(cp);
    return [heads[k][0], d[d.length - 1], cp];
  });
  compositions.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  for (let k = 1; k < compositions.length; ++k)
    if (compositions[k][0] === compositions[k - 1][0] && compositions[k][1] === compositions[k - 1][1])
      fail(`two compositions of ${hex(compositions[k][0])} ${hex(compositions[k][1])}`);

  // Self-check: the tables reproduce NFC and NFKC of every single code point.
  const ccc = (cp) => order.get(cp) || 0;
  const composeMap = new Map(compositions.map(([a, b, c]) => [a * MAX + b, c]));
  const compose = (a, b) => {
    if (a >= 0x1100 && a < 0x1113 && b >= 0x1161 && b < 0x1176) return 0xac00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28;
    if (a >= 0xac00 && a <= 0xd7a3 && (a - 0xac00) % 28 === 0 && b > 0x11a7 && b < 0x11c3) return a + (b - 0x11a7);
    return composeMap.get(a * MAX + b);
  };
  // The crate's recomposition (recompose.rs): a starter is the composee; a following character
  // composes with it unless a character of the same or a higher class (or a starter) came between.
  const recompose = (cps) => {
    const out = [], pending = [];
    let composee = -1, lastClass = 0;  // lastClass 0: nothing pending since the composee
    for (const cp of cps) {
      const cls = ccc(cp);
      if (composee < 0) {
        if (cls === 0) composee = cp;
        else out.push(cp);
        continue;
      }
      if (lastClass !== 0 && lastClass >= cls) {  // blocked
        if (cls === 0) {
          out.push(composee, ...pending.splice(0));
          composee = cp;
          lastClass = 0;
        } else {
          pending.push(cp);
          lastClass = cls;
        }
        continue;
      }
      const composite = compose(composee, cp);
      if (composite !== undefined) {
        composee = composite;
      } else if (lastClass === 0 && cls === 0) {
        out.push(composee);
        composee = cp;
      } else {
        pending.push(cp);
        lastClass = cls;
      }
    }
    if (composee >= 0) out.push(composee);
    return out.concat(pending);
  };
  ALL.forEach((cp, i) => {
    const d = isHangulSyllable(cp) ? hangul(cp) : canonical.get(cp) || [cp];
    if (!same(recompose(d), nfc[i])) fail(`NFC of ${hex(cp)} is not reproduced`);
    const kd = isHangulSyllable(cp) ? hangul(cp) : compat.get(cp) || d;
    if (!same(recompose(kd), nfkc[i])) fail(`NFKC of ${hex(cp)} is not reproduced`);
  });

  process.stdout.write(render({category, regexSpace, regexWord, regexDigit, rustWord, rustSpace, rustNumeric, canonical,
                               compat, order, compositions, regexVersion, normalizerVersion,
                               rustWordVersion: newestKnown(letterSentinels, (cp) => rustWord[cp]),
                               numericVersion: newestKnown(digitSentinels, (cp) => rustNumeric[cp])}));
  log('done');
}

// ---- output ----------------------------------------------------------------------------------

function ranges(member) {
  const out = [];
  for (let cp = 0; cp < MAX; ++cp) {
    if (!member[cp] || isSurrogate(cp)) continue;
    if (out.length && out[out.length - 1][1] === cp - 1) out[out.length - 1][1] = cp;
    else out.push([cp, cp]);
  }
  return out;
}
const h = (cp) => '0x' + cp.toString(16).toUpperCase();
function wrap(items, perLine) {
  const lines = [];
  for (let i = 0; i < items.length; i += perLine) lines.push('    ' + items.slice(i, i + perLine).join(', ') + ',');
  return lines.join('\n');
}
function rangeTable(name, comment, member) {
  const rs = ranges(member);
  return `// ${comment}\nconst Range ${name}[] = {\n${wrap(rs.map(([a, b]) => `{${h(a)}, ${h(b)}}`), 6)}\n};\n` +
         `const size_t ${name}Size = ${rs.length};\n`;
}

function render(t) {
  const runs = [];
  for (let cp = 0; cp < MAX; ++cp)
    if (cp === 0 || t.category[cp] !== t.category[cp - 1]) runs.push(`{${h(cp)}, ${CATEGORIES[t.category[cp]]}}`);
  const cccRuns = [];
  for (const cp of [...t.order.keys()].sort((a, b) => a - b)) {
    const last = cccRuns[cccRuns.length - 1];
    if (last && last[1] === cp - 1 && last[2] === t.order.get(cp)) last[1] = cp;
    else cccRuns.push([cp, cp, t.order.get(cp)]);
  }
  const data = [];
  const decompositionTable = (map) => [...map.keys()].sort((a, b) => a - b).map((cp) => {
    const d = map.get(cp);
    const entry = `{${h(cp)}, ${data.length}, ${d.length}}`;
    data.push(...d);
    return entry;
  });
  const canonicalEntries = decompositionTable(t.canonical);
  const compatEntries = decompositionTable(t.compat);
  return `// Generated by tools/gen_hf_unicode_tables.js from HF tokenizers ${hfVersion} (npm): do not edit.
// Every table was read off HF's own library by probing all code points (surrogates excepted);
// see docs/tokenizer.md, "Unicode versions".
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_unicode_tables.h"

namespace coe::hf::tables {

const char* const kRegexUnicodeVersion = "${t.regexVersion}";
const char* const kRustWordUnicodeVersion = "${t.rustWordVersion}";
const char* const kRustNumericUnicodeVersion = "${t.numericVersion}";
const char* const kNormalizerUnicodeVersion = "${t.normalizerVersion}";

// ---- regex (Oniguruma) ----

// General category of every code point: each run starts at .first and ends where the next starts.
const CategoryRun kRegexCategories[] = {
${wrap(runs, 6)}
};
const size_t kRegexCategoriesSize = ${runs.length};

${rangeTable('kRegexSpace', '\\s', t.regexSpace)}
${rangeTable('kRegexWord', '\\w', t.regexWord)}
${rangeTable('kRegexDigit', '\\d', t.regexDigit)}
// ---- Rust (added tokens, Digits) ----

${rangeTable('kRustRegexWord', 'the regex crate\'s \\w (single_word)', t.rustWord)}
${rangeTable('kRustRegexSpace', 'the regex crate\'s \\s (lstrip, rstrip)', t.rustSpace)}
${rangeTable('kRustNumeric', 'char::is_numeric (Digits)', t.rustNumeric)}
// ---- normalizer (unicode-normalization-alignments) ----

// Non-starters: {first, last, order}. Order ranks the canonical combining classes (1 = lowest
// non-zero class); only comparisons of classes matter to normalization. Others are starters.
const CombiningRun kCombiningOrder[] = {
${wrap(cccRuns.map(([a, b, o]) => `{${h(a)}, ${h(b)}, ${o}}`), 5)}
};
const size_t kCombiningOrderSize = ${cccRuns.length};

// Full canonical decompositions (NFD of one code point, Hangul syllables excepted: algorithmic).
const Decomposition kCanonicalDecompositions[] = {
${wrap(canonicalEntries, 5)}
};
const size_t kCanonicalDecompositionsSize = ${canonicalEntries.length};

// Full compatibility decompositions where they differ from the canonical one (NFKD).
const Decomposition kCompatibilityDecompositions[] = {
${wrap(compatEntries, 5)}
};
const size_t kCompatibilityDecompositionsSize = ${compatEntries.length};

const char32_t kDecompositionData[] = {
${wrap(data.map(h), 10)}
};

// Canonical compositions {first, second, composite}, sorted (Hangul syllables: algorithmic).
const Composition kCompositions[] = {
${wrap(t.compositions.map(([a, b, c]) => `{${h(a)}, ${h(b)}, ${h(c)}}`), 4)}
};
const size_t kCompositionsSize = ${t.compositions.length};

}  // namespace coe::hf::tables

#endif  // COE_WITH_HF_TOKENIZER
`;
}

main().catch((e) => fail(e.stack || e.message));
