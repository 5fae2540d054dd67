"""The public surface: what ``import imdsfs`` and ``imdsfs.emulator`` promise, and nothing else."""

from __future__ import annotations

import types

import pytest

import imdsfs
import imdsfs.emulator


@pytest.mark.parametrize("module", [imdsfs, imdsfs.emulator])
def test_all_lists_every_public_name_sorted(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")  # from __future__
    assert set(module.__all__) - {"__version__"} == public
    assert list(module.__all__) == sorted(module.__all__)  # the order ruff (RUF022) keeps


def test_every_exported_error_derives_from_one_root_and_usage_errors_are_not_service_errors() -> (
    None
):
    errors = [getattr(imdsfs, n) for n in imdsfs.__all__ if n.endswith(("Error", "Found"))]
    errors += [imdsfs.Forbidden, imdsfs.Throttled, imdsfs.Unavailable, imdsfs.DeadlineExceeded]
    assert all(issubclass(e, imdsfs.ImdsfsError) for e in errors)
    usage = [imdsfs.ConfigError, imdsfs.MountError, imdsfs.DocumentError]
    assert all(issubclass(e, imdsfs.UsageError) for e in usage)
    # A configuration mistake must never become a silent EIO at request time.
    assert not any(issubclass(e, imdsfs.ImdsError) for e in usage)
    service = [e for e in errors if e not in (*usage, imdsfs.UsageError, imdsfs.ImdsfsError)]
    assert all(issubclass(e, imdsfs.ImdsError) for e in service)
