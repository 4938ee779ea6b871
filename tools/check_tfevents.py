#!/usr/bin/python3
"""Checks TensorBoard event files with implementations that share nothing with coe's writer.

    tools/check_tfevents.py PATH...    (event files, or directories: every events.out.tfevents.* in them)

Every record's framing is read as TFRecord defines it (uint64 length, masked CRC-32C of the length,
data, masked CRC-32C of the data) and both CRCs are checked with crcmod's predefined 'crc-32c'
(Debian: python3-crcmod); every data block is parsed as a tensorboard.Event by Google's protobuf
library (Debian: python3-protobuf), from a descriptor holding the fields coe writes with the
numbers of tensorboard/compat/proto/event.proto and summary.proto, and must serialize back to the
same bytes (canonical encoding: no unknown, duplicate or default-valued fields). Prints one JSON
object per event: {"file", "index", "wall_time", "step"} plus "file_version" and "writer", or
"values": {tag: simple_value}. The first error is one line "error: FILE: ..." and exit status 1;
missing modules exit 2. tests/test_util_tensorboard.cpp runs it when both modules are installed.
"""
import json
import os
import struct
import sys

try:
    import crcmod.predefined
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as e:
    print(f"error: {e} (apt-get install python3-protobuf python3-crcmod)", file=sys.stderr)
    sys.exit(2)

crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="coe_check_tfevents.proto", package="tensorboard", syntax="proto3")

    def field(msg, name, number, ftype, type_name=None, label=F.LABEL_OPTIONAL, oneof=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof

    source = proto.message_type.add(name="SourceMetadata")
    field(source, "writer", 1, F.TYPE_STRING)
    summary = proto.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    field(value, "tag", 1, F.TYPE_STRING)
    field(value, "simple_value", 2, F.TYPE_FLOAT, oneof=0)
    field(summary, "value", 1, F.TYPE_MESSAGE, ".tensorboard.Summary.Value", label=F.LABEL_REPEATED)
    event = proto.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    field(event, "wall_time", 1, F.TYPE_DOUBLE)
    field(event, "step", 2, F.TYPE_INT64)
    field(event, "file_version", 3, F.TYPE_STRING, oneof=0)
    field(event, "summary", 5, F.TYPE_MESSAGE, ".tensorboard.Summary", oneof=0)
    field(event, "source_metadata", 10, F.TYPE_MESSAGE, ".tensorboard.SourceMetadata")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorboard.Event")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def fail(path, message):
    print(f"error: {path}: {message}", file=sys.stderr)
    sys.exit(1)


def check_file(path, Event):
    with open(path, "rb") as f:
        data = f.read()
    pos, index = 0, 0
    while pos < len(data):
        if len(data) - pos < 12:
            fail(path, f"record {index} at byte {pos}: {len(data) - pos} byte(s) left, a header needs 12")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if length_crc != masked(header):
            fail(path, f"record {index} at byte {pos}: the length's CRC is wrong")
        if pos + 12 + length + 4 > len(data):
            fail(path, f"record {index} at byte {pos}: {length} byte(s) of data and a CRC do not fit")
        payload = data[pos + 12 : pos + 12 + length]
        (data_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        if data_crc != masked(payload):
            fail(path, f"record {index} at byte {pos}: the data's CRC is wrong")
        event = Event()
        try:
            event.ParseFromString(payload)
        except Exception as e:  # DecodeError, or invalid UTF-8 in a string field
            fail(path, f"record {index} at byte {pos}: not an Event: {e}")
        if event.SerializeToString() != payload:
            fail(path, f"record {index} at byte {pos}: not the canonical encoding of the Event it holds")
        out = {"file": os.path.basename(path), "index": index, "wall_time": event.wall_time, "step": event.step}
        what = event.WhichOneof("what")
        if what == "file_version":
            out["file_version"] = event.file_version
            out["writer"] = event.source_metadata.writer
        elif what == "summary":
            values = {}
            for v in event.summary.value:
                if v.WhichOneof("value") != "simple_value":
                    fail(path, f"record {index}: value '{v.tag}' has no simple_value")
                if v.tag in values:
                    fail(path, f"record {index}: tag '{v.tag}' twice in one event")
                values[v.tag] = v.simple_value
            out["values"] = values
        else:
            fail(path, f"record {index} at byte {pos}: neither file_version nor summary")
        if (index == 0) != (what == "file_version"):
            fail(path, f"record {index}: file_version must be the first event, and only it")
        print(json.dumps(out))
        pos += 16 + length
        index += 1
    if index == 0:
        fail(path, "empty file")


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    Event = event_class()
    for arg in argv[1:]:
        if os.path.isdir(arg):
            files = sorted(os.path.join(arg, n) for n in os.listdir(arg) if n.startswith("events.out.tfevents."))
            if not files:
                fail(arg, "no events.out.tfevents.* files")
        else:
            files = [arg]
        for path in files:
            check_file(path, Event)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
