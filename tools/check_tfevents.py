#!/usr/bin/env python3
"""Reads coe's TensorBoard event files with the tensorboard package itself (tools/requirements.txt).

    tools/check_tfevents.py TB_DIR

Every record of every events.out.tfevents.* file in TB_DIR goes through tensorboard's own record
reader (TFRecord framing, CRC-32C of the length and of the data) and is parsed as its
tensorboard.Event proto, which must serialize back to the same bytes (no unknown or duplicate
fields). Then TensorBoard's EventAccumulator, what `tensorboard --logdir` serves from, loads the
directory. Prints one JSON object:
  {"files": N, "records": N, "file_version": "brain.Event:2", "writer": "coe",
   "scalars": {tag: [[step, value, wall_time], ...]}, "texts": {tag: [[step, text], ...]}}
The first error is one line "error: FILE: ..." and exit status 1.
tests/test_util_tensorboard.cpp and tests/test_train_run_dir.cpp compare it with coe's logs.
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def fail(path, message):
    print(f"error: {path}: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: tools/check_tfevents.py TB_DIR", file=sys.stderr)
        return 2
    tb = argv[1]
    files = sorted(os.path.join(tb, n) for n in os.listdir(tb) if n.startswith("events.out.tfevents."))
    if not files:
        fail(tb, "no events.out.tfevents.* files")
    out = {"files": len(files), "records": 0, "file_version": None, "writer": None, "scalars": {}}
    for path in files:
        reader = pywrap_tensorflow.PyRecordReader_New(path, 0, None, None)
        index = 0
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as e:
                fail(path, f"record {index}: {e.message}")
            payload = reader.record()
            event = event_pb2.Event.FromString(payload)
            if event.SerializeToString() != payload:
                fail(path, f"record {index}: not the canonical encoding of the Event it holds")
            if (index == 0) != event.HasField("file_version"):
                fail(path, f"record {index}: file_version must be the first event, and only it")
            if index == 0:
                if out["file_version"] not in (None, event.file_version):
                    fail(path, f"file_version {event.file_version} differs from {out['file_version']}")
                out["file_version"], out["writer"] = event.file_version, event.source_metadata.writer
            index += 1
        if index == 0:
            fail(path, "empty file")
        out["records"] += index

    acc = event_accumulator.EventAccumulator(
        tb, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        out["scalars"][tag] = [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)]
    # Text summaries (the text plugin's): [[step, text], ...] per tag.
    out["texts"] = {}
    for tag in sorted(acc.Tags()["tensors"]):
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "text":
            continue
        out["texts"][tag] = [[e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")] for e in acc.Tensors(tag)]
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
