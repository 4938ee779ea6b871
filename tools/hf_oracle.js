#!/usr/bin/env node
// The reference side of coe's tokenizer differential test: Hugging Face `tokenizers` (the Rust
// library through its node bindings, npm package `tokenizers`) encoding and decoding JSONL lines.
//
//   node tools/hf_oracle.js --module DIR --tokenizer FILE [--decode] [--batch N] < in.jsonl > out.jsonl
//   node tools/hf_oracle.js --module DIR --tokenizer FILE --bench [--field F]... [--repeat K] < in.jsonl
//
// DIR is where `npm install --prefix DIR tokenizers@0.23.2` put the package (or $COE_HF_ORACLE).
// Encoding (default): {"text": ...} lines -> {"ids": [...], "text": decode(ids, false),
// "text_skip": decode(ids, true)} lines, encode(text, add_special_tokens=False) as in coe.
// --decode: {"ids": [...]} lines -> {"text": ..., "text_skip": ...} lines.
// --bench [--field F]... [--repeat K]: encodes the records' fields (joined by a space, as
// coe-tokenize --bench) K times with encodeBatch and prints tokens/s; reading is not timed.
// One line out per line in, in order. A bad line stops the run with its number on stderr.
'use strict';
const path = require('path');
const readline = require('readline');

function usage(message) {
  process.stderr.write(`hf_oracle: ${message}\n` +
    'usage: node tools/hf_oracle.js --module DIR --tokenizer FILE [--decode] [--batch N] < in.jsonl\n');
  process.exit(2);
}

const args = {module: process.env.COE_HF_ORACLE || '', tokenizer: '', decode: false, batch: 4096, bench: false,
              fields: [], repeat: 3};
for (let i = 2; i < process.argv.length; ++i) {
  const a = process.argv[i];
  const value = () => (i + 1 < process.argv.length ? process.argv[++i] : usage(`${a} needs a value`));
  if (a === '--module') args.module = value();
  else if (a === '--tokenizer') args.tokenizer = value();
  else if (a === '--decode') args.decode = true;
  else if (a === '--batch') args.batch = parseInt(value(), 10);
  else if (a === '--bench') args.bench = true;
  else if (a === '--field') args.fields.push(value());
  else if (a === '--repeat') args.repeat = parseInt(value(), 10);
  else usage(`unknown argument ${a}`);
}
if (!args.module) usage('--module DIR (or COE_HF_ORACLE) is required');
if (!args.tokenizer) usage('--tokenizer FILE is required');
if (!(args.batch > 0)) usage('--batch must be a positive integer');

let tokenizers;
try {
  tokenizers = require(path.resolve(args.module, 'node_modules', 'tokenizers'));
} catch (e) {
  process.stderr.write(`hf_oracle: cannot load tokenizers from ${args.module}: ${e.message}\n`);
  process.exit(3);
}
const tokenizer = tokenizers.Tokenizer.fromFile(args.tokenizer);

function write(text) {
  return new Promise((resolve) => (process.stdout.write(text) ? resolve() : process.stdout.once('drain', resolve)));
}

async function flush(batch) {
  if (batch.length === 0) return;
  let idsList;
  if (args.decode) {
    idsList = batch;
  } else {
    const encodings = await tokenizer.encodeBatch(batch, {addSpecialTokens: false});
    idsList = encodings.map((e) => e.getIds());
  }
  const texts = await tokenizer.decodeBatch(idsList, false);
  const skipped = await tokenizer.decodeBatch(idsList, true);
  let out = '';
  for (let i = 0; i < batch.length; ++i) {
    const record = args.decode ? {text: texts[i], text_skip: skipped[i]}
                               : {ids: idsList[i], text: texts[i], text_skip: skipped[i]};
    out += JSON.stringify(record) + '\n';
  }
  await write(out);
}

async function bench() {
  const fields = args.fields.length ? args.fields : ['text'];
  const texts = [];
  const lines = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
  for await (const line of lines) {
    const record = JSON.parse(line);
    texts.push(fields.map((f) => record[f]).join(' '));
  }
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);
  const threads = process.env.RAYON_NUM_THREADS || 'all cores';
  process.stdout.write(`bench: ${texts.length} documents, ${bytes} bytes, tokenizer ${path.basename(args.tokenizer)}, ` +
                       `HF tokenizers ${require(path.resolve(args.module, 'node_modules', 'tokenizers', 'package.json')).version} ` +
                       `encodeBatch (RAYON_NUM_THREADS=${threads})\n`);
  for (let pass = 1; pass <= args.repeat; ++pass) {
    const start = process.hrtime.bigint();
    let tokens = 0;
    for (let i = 0; i < texts.length; i += args.batch) {
      const encodings = await tokenizer.encodeBatch(texts.slice(i, i + args.batch), {addSpecialTokens: false});
      for (const e of encodings) tokens += e.getLength();
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    process.stdout.write(`pass ${pass}: ${tokens} tokens in ${seconds.toFixed(3)} s = ${Math.round(tokens / seconds)} tokens/s\n`);
  }
}

async function main() {
  if (args.bench) return bench();
  const lines = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
  let batch = [];
  let lineNo = 0;
  for await (const line of lines) {
    ++lineNo;
    let value;
    try {
      const record = JSON.parse(line);
      value = args.decode ? record.ids : record.text;
      if (args.decode ? !Array.isArray(value) : typeof value !== 'string') throw new Error(args.decode ? "missing array field 'ids'" : "missing string field 'text'");
    } catch (e) {
      process.stderr.write(`hf_oracle: stdin line ${lineNo}: ${e.message}\n`);
      process.exit(1);
    }
    batch.push(value);
    if (batch.length >= args.batch) {
      await flush(batch);
      batch = [];
    }
  }
  await flush(batch);
}

main().catch((e) => {
  process.stderr.write(`hf_oracle: ${e.message}\n`);
  process.exit(1);
});
