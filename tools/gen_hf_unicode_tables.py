#!/usr/bin/env python3
r"""Generates src/tokenizer/generated/: every Unicode character property coe's HF tokenizer uses,
read off Hugging Face `tokenizers` itself (the Rust library through its Python bindings, PyPI
package pinned in tools/requirements.txt) by probing all code points, so that coe agrees with it
character by character. It writes two files, both stamped @generated (and marked so in
.gitattributes): hf_unicode_tables.cpp (the tables) and hf_unicode_categories.h (the general
category enum the tables are written in; src/tokenizer/hf_unicode_tables.h declares the rest).

  .venv/bin/python3 tools/gen_hf_unicode_tables.py --out src/tokenizer/generated

(.venv is made by tools/install-deps.sh.) What is probed, and through which part of HF
(docs/tokenizer.md, "Unicode versions"):
  - regex classes of Split / ByteLevel patterns (Oniguruma through the onig crate): the 30
    general categories \p{Lu} .. \p{Cn}, \s, \w, \d, each matched against every code point;
  - `\w` and `\s` of the Rust regex crate (single_word, lstrip/rstrip of added tokens), through
    added tokens with those flags;
  - Rust's char::is_numeric (the Digits pre-tokenizer), through Digits;
  - NFD/NFKD of every code point, the order of canonical combining classes (by how NFD reorders
    pairs of non-starters) and the canonical compositions (from NFC), through HF's normalizers
    (the unicode-normalization-alignments crate).
Surrogates (U+D800..U+DFFF) cannot occur in UTF-8 text and are not probed. The probes print a
summary to stderr, including which Unicode version each table corresponds to (newest
characters it knows from a list of sentinel characters below).
"""
import argparse
import json
import os
import sys
import types

import tokenizers
from tokenizers import Tokenizer, normalizers, pre_tokenizers

MAX = 0x110000
SURROGATES = range(0xD800, 0xE000)
# Every code point but the surrogates, as contiguous blocks [first, end) of at most 1 << 16: the
# unit in which code points are sent to HF, one string per block.
BLOCKS = [(lo, min(lo + (1 << 16), hi)) for first, hi in ((0, SURROGATES.start), (SURROGATES.stop, MAX))
          for lo in range(first, hi, 1 << 16)]
ALL = [cp for lo, hi in BLOCKS for cp in range(lo, hi)]


def hex_cp(cp):
    return f"U+{cp:04X}"


def fail(message):
    sys.stderr.write(f"gen_hf_unicode_tables: {message}\n")
    sys.exit(1)


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ---- tokenizers built for probing ------------------------------------------------------------

BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()


def make_tokenizer(pre_tokenizer=None, added=()):
    """A byte-level BPE tokenizer without merges, with the given steps (their JSON forms)."""
    config = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added),
        "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {c: i for i, c in enumerate(BYTE_ALPHABET)}, "merges": []},
    }
    return Tokenizer.from_str(json.dumps(config))


def regex_members(pattern):
    """Membership (a bytearray indexed by code point) of the single-character regex `pattern` in
    Oniguruma: a Split with behaviour Removed leaves exactly the characters that do not match."""
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": False}
    pre = make_tokenizer(pre_tokenizer=split).pre_tokenizer
    member = bytearray(MAX)
    for lo, hi in BLOCKS:
        member[lo:hi] = b"\x01" * (hi - lo)
        for _, (b, e) in pre.pre_tokenize_str("".join(map(chr, range(lo, hi)))):
            member[lo + b:lo + e] = bytes(e - b)
    return member


def encode_probes(tokenizer, make_text):
    """Encodes make_text(cp) for every code point, in batches; yields (cp, ids, offsets)."""
    chunk = 1 << 14
    for start in range(0, len(ALL), chunk):
        cps = ALL[start:start + chunk]
        encodings = tokenizer.encode_batch([make_text(cp) for cp in cps], add_special_tokens=False)
        for cp, e in zip(cps, encodings):
            yield cp, e.ids, e.offsets


NORMALIZERS = {"nfc": normalizers.NFC, "nfd": normalizers.NFD, "nfkc": normalizers.NFKC, "nfkd": normalizers.NFKD}


def normalize_each(name, pieces):
    """Applies normalizer `name` to each of `pieces` (strings), returning a list of strings. One
    call per chunk, pieces separated by U+0001 (a starter that never composes or decomposes);
    pieces holding U+0001 themselves are normalized one by one."""
    normalizer = NORMALIZERS[name]()
    out = [None] * len(pieces)
    batched = []
    for i, p in enumerate(pieces):
        if "\u0001" in p:
            out[i] = normalizer.normalize_str(p)
        else:
            batched.append(i)
    chunk = 1 << 15
    for start in range(0, len(batched), chunk):
        indices = batched[start:start + chunk]
        parts = normalizer.normalize_str("\u0001".join(pieces[i] for i in indices)).split("\u0001")
        if len(parts) != len(indices):
            fail(f"{name}: separator count changed")
        for i, p in zip(indices, parts):
            out[i] = p
    return out


def changed_singles(name):
    """{cp: normalized} for the code points that normalizer `name` changes, alone."""
    singles = [chr(cp) for cp in ALL]
    return {cp: out for cp, s, out in zip(ALL, singles, normalize_each(name, singles)) if out != s}


def cps_of(s):
    return tuple(map(ord, s))


def text_of(cps):
    return "".join(map(chr, cps))


# ---- sentinels: characters new in each Unicode version ---------------------------------------

# For naming the version a table corresponds to: the newest version whose characters it knows.
LETTER_SENTINELS = [
    ("9.0", 0x1E900), ("10.0", 0x11A00), ("11.0", 0x10D00), ("12.0", 0x1E100), ("13.0", 0x10E80),
    ("14.0", 0x10F70), ("15.0", 0x11F04), ("15.1", 0x2EBF0), ("16.0", 0x10D4A), ("17.0", 0x323B0),
]
DIGIT_SENTINELS = [
    ("9.0", 0x1E950), ("10.0", 0x11D50), ("11.0", 0x10D30), ("12.0", 0x1E140), ("13.0", 0x11950),
    ("14.0", 0x16AC0), ("15.0", 0x11F50), ("16.0", 0x10D40), ("17.0", 0x11DE0),
]
# Non-starters (canonical combining class != 0) new in each version.
MARK_SENTINELS = [
    ("9.0", 0x1E944), ("10.0", 0x1DF6), ("11.0", 0x08D3), ("12.0", 0x1E130), ("13.0", 0x1ABF),
    ("14.0", 0x08CA), ("15.0", 0x1E4EC), ("16.0", 0x10D69),
]


def newest_known(sentinels, known):
    newest = "older than " + sentinels[0][0]
    for version, cp in sentinels:
        if not known(cp):
            break
        newest = version
    return newest


# ---- probes ----------------------------------------------------------------------------------

CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
              "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"]
NONE = 0xFF  # no category yet


def probe_categories():
    """General category (an index into CATEGORIES) of every code point, per Oniguruma."""
    category = bytearray([NONE]) * MAX
    for c, name in enumerate(CATEGORIES):
        for first, last in ranges(regex_members(f"\\p{{{name}}}")):
            run = category[first:last + 1]
            if run.count(NONE) != len(run):
                cp = next(first + i for i, old in enumerate(run) if old != NONE)
                fail(f"{hex_cp(cp)} is in both \\p{{{CATEGORIES[category[cp]]}}} and \\p{{{name}}}")
            category[first:last + 1] = bytes([c]) * len(run)
    for cp in ALL:
        if category[cp] == NONE:
            fail(f"{hex_cp(cp)} is in no general category")
    category[SURROGATES.start:SURROGATES.stop] = bytes([CATEGORIES.index("Cs")]) * len(SURROGATES)
    # The one-letter classes are the unions of their subcategories.
    for major in "LMNPSZC":
        member = regex_members(f"\\p{{{major}}}")
        for cp in ALL:
            if bool(member[cp]) != (CATEGORIES[category[cp]][0] == major):
                fail(f"\\p{{{major}}} differs from its subcategories at {hex_cp(cp)}")
    return category


def probe_rust():
    """The Rust regex crate's \\w and \\s, and char::is_numeric, as bytearrays by code point."""
    def added_token(**flags):
        token = {"id": 256, "content": "\u0002\u0003", "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
        return make_tokenizer(added=[{**token, **flags}])

    # "\u0001 c \u0002\u0003": the token is dropped when c is a word character.
    rust_word = bytearray(MAX)
    for cp, ids, _ in encode_probes(added_token(single_word=True), lambda cp: "\u0001" + chr(cp) + "\u0002\u0003"):
        rust_word[cp] = 0 if 256 in ids else 1
    # "x c \u0002\u0003": the token's span starts at c when c is whitespace.
    rust_space = bytearray(MAX)
    for cp, ids, offsets in encode_probes(added_token(lstrip=True), lambda cp: "x" + chr(cp) + "\u0002\u0003"):
        if 256 not in ids:
            fail(f"lstrip probe lost its token at {hex_cp(cp)}")
        rust_space[cp] = 1 if offsets[ids.index(256)][0] == 1 else 0
    # Rust char::is_numeric: Digits(individual_digits) isolates each numeric character.
    digits = make_tokenizer(pre_tokenizer={"type": "Digits", "individual_digits": True}).pre_tokenizer
    rust_numeric = bytearray(MAX)
    for lo, hi in BLOCKS:
        text = "".join("x" + chr(cp) for cp in range(lo, hi))
        for _, (b, _) in digits.pre_tokenize_str(text):
            if b % 2 == 1:
                rust_numeric[lo + (b - 1) // 2] = 1
    return rust_word, rust_space, rust_numeric


def is_hangul_syllable(cp):
    return 0xAC00 <= cp <= 0xD7A3


def hangul(cp):
    s = cp - 0xAC00
    l, v, t = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, 0x11A7 + s % 28
    return (l, v) if t == 0x11A7 else (l, v, t)


def probe_normalizer():
    """Canonical and compatibility decompositions, the order of combining classes and the canonical
    compositions, per HF's normalizers; and the Unicode version of the combining classes."""
    # Full decompositions of every code point.
    nfd, nfkd, nfc, nfkc = (changed_singles(name) for name in ("nfd", "nfkd", "nfc", "nfkc"))
    canonical, compat = {}, {}
    for cp in ALL:
        d = cps_of(nfd.get(cp, chr(cp)))
        kd = cps_of(nfkd.get(cp, chr(cp)))
        if is_hangul_syllable(cp):
            if d != hangul(cp) or kd != hangul(cp):
                fail(f"Hangul {hex_cp(cp)} is not decomposed algorithmically")
            continue
        if d != (cp,):
            canonical[cp] = d
        if kd != d:
            compat[cp] = kd

    # Non-starters among the fully decomposed characters: c is one iff NFD reorders it against
    # U+0334 (c, U+0334: swapped iff class(c) > class(U+0334)) or U+0345 (U+0345, c: swapped iff
    # 0 < class(c) < class(U+0345)); together these catch every non-zero class.
    def swapped(pairs):
        return [out[0] != pair[0] for pair, out in zip(pairs, normalize_each("nfd", pairs))]

    stable = [cp for cp in ALL if cp not in nfd]
    after_low = swapped([chr(cp) + "\u0334" for cp in stable])
    before_high = swapped(["\u0345" + chr(cp) for cp in stable])
    non_starters = [cp for cp, low, high in zip(stable, after_low, before_high) if low or high]
    # The order of their classes, from NFD of every ordered pair: rank = dense rank of the number
    # of non-starters with a lower class.
    n = len(non_starters)
    greater = swapped([chr(a) + chr(b) for a in non_starters for b in non_starters])
    # greater[a * n + b]: swapped iff class(a) > class(b)
    below = [sum(greater[a * n:(a + 1) * n]) for a in range(n)]
    distinct = sorted(set(below))
    rank = {count: r + 1 for r, count in enumerate(distinct)}
    order = {cp: rank[below[a]] for a, cp in enumerate(non_starters)}
    for a in range(n):
        for b in range(n):
            if greater[a * n + b] != (order[non_starters[a]] > order[non_starters[b]]):
                fail(f"combining classes of {hex_cp(non_starters[a])} and {hex_cp(non_starters[b])} "
                     "are not totally ordered")
    version = newest_known(MARK_SENTINELS, order.__contains__)
    log(f"normalizer: {len(canonical)} canonical and {len(compat)} compatibility decompositions, "
        f"{n} non-starters in {len(distinct)} classes: Unicode {version}")

    # Canonical compositions: every character that NFC keeps although it decomposes is a primary
    # composite; it composes from NFC(all but the last character of its NFD) and that last character.
    composites = [cp for cp in ALL if not is_hangul_syllable(cp) and cp in canonical and cp not in nfc]
    heads = normalize_each("nfc", [text_of(canonical[cp][:-1]) for cp in composites])
    compositions = []
    for cp, head in zip(composites, heads):
        if len(head) != 1:
            fail(f"cannot find the first part of the composition of {hex_cp(cp)}")
        compositions.append((ord(head), canonical[cp][-1], cp))
    compositions.sort(key=lambda c: (c[0], c[1]))
    for prev, cur in zip(compositions, compositions[1:]):
        if prev[:2] == cur[:2]:
            fail(f"two compositions of {hex_cp(cur[0])} {hex_cp(cur[1])}")

    # Self-check: the tables reproduce NFC and NFKC of every single code point.
    compose_map = {(a, b): c for a, b, c in compositions}

    def compose(a, b):
        if 0x1100 <= a < 0x1113 and 0x1161 <= b < 0x1176:
            return 0xAC00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28
        if is_hangul_syllable(a) and (a - 0xAC00) % 28 == 0 and 0x11A7 < b < 0x11C3:
            return a + (b - 0x11A7)
        return compose_map.get((a, b))

    # The crate's recomposition (recompose.rs): a starter is the composee; a following character
    # composes with it unless a character of the same or a higher class (or a starter) came between.
    def recompose(cps):
        out, pending = [], []
        composee, last_class = None, 0  # last_class 0: nothing pending since the composee
        for cp in cps:
            cls = order.get(cp, 0)
            if composee is None:
                if cls == 0:
                    composee = cp
                else:
                    out.append(cp)
                continue
            if last_class != 0 and last_class >= cls:  # blocked
                if cls == 0:
                    out.append(composee)
                    out.extend(pending)
                    pending.clear()
                    composee, last_class = cp, 0
                else:
                    pending.append(cp)
                    last_class = cls
                continue
            composite = compose(composee, cp)
            if composite is not None:
                composee = composite
            elif last_class == 0 and cls == 0:
                out.append(composee)
                composee = cp
            else:
                pending.append(cp)
                last_class = cls
        if composee is not None:
            out.append(composee)
        return tuple(out + pending)

    for cp in ALL:
        d = hangul(cp) if is_hangul_syllable(cp) else canonical.get(cp, (cp,))
        if recompose(d) != cps_of(nfc.get(cp, chr(cp))):
            fail(f"NFC of {hex_cp(cp)} is not reproduced")
        kd = hangul(cp) if is_hangul_syllable(cp) else compat.get(cp, d)
        if recompose(kd) != cps_of(nfkc.get(cp, chr(cp))):
            fail(f"NFKC of {hex_cp(cp)} is not reproduced")
    return canonical, compat, order, compositions, version


def main():
    parser = argparse.ArgumentParser(
        prog="gen_hf_unicode_tables",
        usage=".venv/bin/python3 tools/gen_hf_unicode_tables.py --out src/tokenizer/generated",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory of the generated files (exists)")
    out = parser.parse_args().out
    if not os.path.isdir(out):
        fail(f"--out {out}: not a directory")
    log(f"probing HF tokenizers {tokenizers.__version__} from {os.path.dirname(tokenizers.__file__)}")
    category = probe_categories()
    regex_space = regex_members("\\s")
    regex_word = regex_members("\\w")
    regex_digit = regex_members("\\d")
    regex_version = newest_known(LETTER_SENTINELS, lambda cp: CATEGORIES[category[cp]] != "Cn")
    log(f"regex (Oniguruma) general categories: Unicode {regex_version}")

    rust_word, rust_space, rust_numeric = probe_rust()
    rust_word_version = newest_known(LETTER_SENTINELS, rust_word.__getitem__)
    numeric_version = newest_known(DIGIT_SENTINELS, rust_numeric.__getitem__)
    log(f"rust regex \\w: Unicode {rust_word_version}; char::is_numeric: Unicode {numeric_version}")

    canonical, compat, order, compositions, normalizer_version = probe_normalizer()

    tables = render(types.SimpleNamespace(
        category=category, regex_space=regex_space, regex_word=regex_word, regex_digit=regex_digit,
        rust_word=rust_word, rust_space=rust_space, rust_numeric=rust_numeric, canonical=canonical,
        compat=compat, order=order, compositions=compositions, regex_version=regex_version,
        rust_word_version=rust_word_version, numeric_version=numeric_version,
        normalizer_version=normalizer_version))
    write_atomic(os.path.join(out, "hf_unicode_categories.h"), render_categories())
    write_atomic(os.path.join(out, "hf_unicode_tables.cpp"), tables)
    log(f"wrote {out}/hf_unicode_categories.h and {out}/hf_unicode_tables.cpp")


def write_atomic(path, text):
    """Writes `path` whole or not at all (a temporary file renamed into place)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- output ----------------------------------------------------------------------------------

def ranges(member):
    """Runs [first, last] of the members (surrogates are never members)."""
    out = []
    first = member.find(1)
    while first >= 0:
        end = member.find(0, first)
        if end < 0:
            end = MAX
        out.append((first, end - 1))
        first = member.find(1, end)
    return out


def h(cp):
    return f"0x{cp:X}"


def wrap(items, per_line):
    return "\n".join("    " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))


def range_table(name, comment, member):
    rs = ranges(member)
    return (f"// {comment}\nconst Range {name}[] = {{\n{wrap([f'{{{h(a)}, {h(b)}}}' for a, b in rs], 6)}\n}};\n"
            f"const size_t {name}Size = {len(rs)};\n")


def stamp():
    return (f"// @generated by tools/gen_hf_unicode_tables.py from HF tokenizers {tokenizers.__version__} (PyPI): "
            "do not edit.\n")


def render_categories():
    """The C++ header of the general category enum, in the order the probes use (CATEGORIES)."""
    names = "".join(f"  {name},\n" for name in CATEGORIES)
    return f"""\
{stamp()}// The general categories the tables of hf_unicode_tables.cpp are written in, in probe order.
#pragma once
#include <cstdint>

namespace coe::hf::tables {{

enum Category : uint8_t {{
{names}  kCategoryCount
}};

}}  // namespace coe::hf::tables
"""


def render(t):
    """The C++ source of the tables `t` (the probes' results)."""
    runs = [f"{{{h(cp)}, {CATEGORIES[t.category[cp]]}}}" for cp in range(MAX)
            if cp == 0 or t.category[cp] != t.category[cp - 1]]
    ccc_runs = []
    for cp in sorted(t.order):
        if ccc_runs and ccc_runs[-1][1] == cp - 1 and ccc_runs[-1][2] == t.order[cp]:
            ccc_runs[-1][1] = cp
        else:
            ccc_runs.append([cp, cp, t.order[cp]])
    data = []

    def decomposition_table(decompositions):
        entries = []
        for cp in sorted(decompositions):
            d = decompositions[cp]
            entries.append(f"{{{h(cp)}, {len(data)}, {len(d)}}}")
            data.extend(d)
        return entries

    canonical_entries = decomposition_table(t.canonical)
    compat_entries = decomposition_table(t.compat)
    regex_tables = "\n".join([range_table("kRegexSpace", "\\s", t.regex_space),
                              range_table("kRegexWord", "\\w", t.regex_word),
                              range_table("kRegexDigit", "\\d", t.regex_digit)])
    rust_tables = "\n".join([range_table("kRustRegexWord", "the regex crate's \\w (single_word)", t.rust_word),
                             range_table("kRustRegexSpace", "the regex crate's \\s (lstrip, rstrip)", t.rust_space),
                             range_table("kRustNumeric", "char::is_numeric (Digits)", t.rust_numeric)])
    return f"""\
{stamp()}// Every table was read off HF's own library by probing all code points (surrogates excepted);
// see docs/tokenizer.md, "Unicode versions".
#ifdef COE_WITH_HF_TOKENIZER
#include "../hf_unicode_tables.h"

namespace coe::hf::tables {{

const char* const kRegexUnicodeVersion = "{t.regex_version}";
const char* const kRustWordUnicodeVersion = "{t.rust_word_version}";
const char* const kRustNumericUnicodeVersion = "{t.numeric_version}";
const char* const kNormalizerUnicodeVersion = "{t.normalizer_version}";

// ---- regex (Oniguruma) ----

// General category of every code point: each run starts at .first and ends where the next starts.
const CategoryRun kRegexCategories[] = {{
{wrap(runs, 6)}
}};
const size_t kRegexCategoriesSize = {len(runs)};

{regex_tables}
// ---- Rust (added tokens, Digits) ----

{rust_tables}
// ---- normalizer (unicode-normalization-alignments) ----

// Non-starters: {{first, last, order}}. Order ranks the canonical combining classes (1 = lowest
// non-zero class); only comparisons of classes matter to normalization. Others are starters.
const CombiningRun kCombiningOrder[] = {{
{wrap([f"{{{h(a)}, {h(b)}, {o}}}" for a, b, o in ccc_runs], 5)}
}};
const size_t kCombiningOrderSize = {len(ccc_runs)};

// Full canonical decompositions (NFD of one code point, Hangul syllables excepted: algorithmic).
const Decomposition kCanonicalDecompositions[] = {{
{wrap(canonical_entries, 5)}
}};
const size_t kCanonicalDecompositionsSize = {len(canonical_entries)};

// Full compatibility decompositions where they differ from the canonical one (NFKD).
const Decomposition kCompatibilityDecompositions[] = {{
{wrap(compat_entries, 5)}
}};
const size_t kCompatibilityDecompositionsSize = {len(compat_entries)};

const char32_t kDecompositionData[] = {{
{wrap([h(cp) for cp in data], 10)}
}};

// Canonical compositions {{first, second, composite}}, sorted (Hangul syllables: algorithmic).
const Composition kCompositions[] = {{
{wrap([f"{{{h(a)}, {h(b)}, {h(c)}}}" for a, b, c in t.compositions], 4)}
}};
const size_t kCompositionsSize = {len(t.compositions)};

}}  // namespace coe::hf::tables

#endif  // COE_WITH_HF_TOKENIZER
"""


if __name__ == "__main__":
    main()
