"""The public names are a promise: this pins them (py-lmdb, trio)."""

import shmipc


def test_all_is_pinned():
    assert sorted(shmipc.__all__) == sorted([
        "DEFAULT_CAPACITY", "Channel", "ChannelClosed", "ChannelStatistics", "Codec",
        "CorruptChannel", "DecodeError", "Empty", "EncodeError", "EndOfChannel", "Full",
        "IncompatibleChannel", "Mapping", "MappingError", "MappingKind", "MessageTooLarge",
        "NotAChannel", "PeerDied", "ShmipcError", "WrongStartMethod", "map_anonymous",
        "map_file", "RECORD_EXT_CODE", "FieldTooLong", "Record", "RecordArray", "RecordChannel",
        "RecordError", "RecordStatistics", "TooManyWaiters", "wait", "AsyncChannel",
        "AsyncRecordChannel", "Queue", "JoinableQueue",
    ])


def test_every_public_name_exists_and_is_documented():
    for name in shmipc.__all__:
        obj = getattr(shmipc, name)
        if callable(obj):
            assert obj.__doc__, name


def test_errors_form_one_hierarchy():
    for name in shmipc.__all__:
        obj = getattr(shmipc, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, shmipc.ShmipcError), name


def test_public_methods_are_documented():
    for cls in (shmipc.Channel, shmipc.Queue, shmipc.JoinableQueue):
        for name in dir(cls):
            if not name.startswith("_"):
                assert getattr(cls, name).__doc__, (cls.__name__, name)


def test_the_asyncio_face_is_documented_and_not_imported_by_import_shmipc():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, shmipc; print('asyncio' in "
                          "sys.modules)"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    for cls in (shmipc.AsyncChannel, shmipc.AsyncRecordChannel):
        for name in dir(cls):
            if not name.startswith("_"):
                assert getattr(cls, name).__doc__, name
