"""argv builders for qemu-img. Every call names its formats: ``-f`` always, ``-O`` for
outputs, ``-F`` for backings. Golden tests in tests/test_qemuimg.py pin every argv built
here.

File names. qemu-img 7.2 accepts ``--`` before the file names of every sub-command used
here (convert included: it parses options with getopt, so ``--`` ends them for all
positions), but ``--`` does not stop qemu from reading a *protocol* out of a name: a
relative ``nbd:x`` or ``json:{...}`` is opened as an NBD export or a JSON spec, ``--``
or not. An absolute path never starts with ``-`` and never has a protocol prefix (qemu
only looks for one before the first ``/``), so the builders added for jobs take image
paths that are absolute (``ValueError`` otherwise) and still put ``--`` in front of them.
A backing name (``-b``/``-B``) is an option argument, so a leading ``-`` is safe there; a
relative one is refused when qemu would read a protocol in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from backends.model import ImageFormat

QEMU_IMG = "qemu-img"

# qemu-img -p prints "    (12.34/100%)\r"; the last match in a chunk is the newest.
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def create(
    path: str,
    fmt: ImageFormat,
    capacity: int,
    *,
    backing: str | None = None,
    backing_format: ImageFormat | str | None = None,
    preallocation: str | None = None,
) -> list[str]:
    """``qemu-img create``; a backing always comes with its format (``-F``)."""
    argv = [QEMU_IMG, "create", "-q", "-f", str(fmt)]
    if backing is not None:
        if not backing_format:
            raise ValueError("a backing file needs a declared format")
        argv += ["-b", backing, "-F", str(backing_format)]
    if preallocation:
        argv += ["-o", f"preallocation={preallocation}"]
    # "--" keeps a name starting with "-" from being read as an option.
    argv += ["--", path, str(capacity)]
    return argv


def info(path: str, fmt: ImageFormat | str) -> list[str]:
    return [QEMU_IMG, "info", "--output=json", "-f", str(fmt), "--", path]


def without_backing(path: str) -> str:
    """A ``json:`` file name that opens ``path`` with its backing chain cut off, so a
    backing reference in an untrusted header is never followed."""
    return "json:" + json.dumps({"backing": None, "file": {"driver": "file", "filename": path}})


def allocation_map(path: str, fmt: ImageFormat | str) -> list[str]:
    """``qemu-img map`` of the image's own clusters (``-U``: it may be in use)."""
    return [QEMU_IMG, "map", "-U", "--output=json", "-f", str(fmt), without_backing(path)]


def parse_progress(chunk: bytes) -> float | None:
    """The newest percentage in a chunk of ``qemu-img -p`` output, or None."""
    found = _PROGRESS.findall(chunk)
    return float(found[-1]) if found else None


class ProgressParser:
    """Percentages from a stream of ``qemu-img -p`` output, fed chunk by chunk.

    A pipe splits the stream anywhere, mid-number included ("(12." then "50/100%)"):
    the unmatched tail of one chunk is kept and completed by the next.
    """

    _KEEP = 64  # bytes of unmatched tail kept; one progress line is ~20

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> float | None:
        """The newest percentage completed by ``chunk``, or None when there is none."""
        data = self._pending + chunk
        found = list(_PROGRESS.finditer(data))
        if not found:
            self._pending = data[-self._KEEP:]
            return None
        last = found[-1]
        self._pending = data[last.end():][-self._KEEP:]
        return float(last.group(1))


# -- the builders of the jobs issue --------------------------------------------------


def qemu_format(fmt: ImageFormat | str) -> str:
    """The name qemu knows a format by: an ISO is a raw image to qemu."""
    return "raw" if str(fmt) == ImageFormat.ISO else str(fmt)


def _image(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"image paths given to qemu-img must be absolute: {path!r}")
    return path


def _backing(name: str, fmt: ImageFormat | str | None) -> list[str]:
    if not fmt:
        raise ValueError("a backing file needs a declared format")
    head = name.split("/", 1)[0]
    if not name.startswith("/") and ":" in head:
        raise ValueError(f"qemu would read a protocol in the backing name {name!r}; "
                         "give it as an absolute path")
    return [name, "-F", qemu_format(fmt)]


def convert(
    src: str,
    src_fmt: ImageFormat | str,
    dst: str,
    dst_fmt: ImageFormat | str,
    *,
    sparse: bool = True,
    compress: bool = False,
    backing: str | None = None,
    backing_fmt: ImageFormat | str | None = None,
    preallocation: str | None = None,
    target_is_zero: bool = False,
    existing: bool = False,
    progress: bool = True,
    out_of_order: bool = False,
) -> list[str]:
    """``qemu-img convert`` of ``src`` into a new image ``dst``, or into the existing
    image ``dst`` (``existing``: ``-n``, every byte written, zeroes included).

    Args:
        sparse: zeroes in the source stay holes (qemu's default ``-S 4k``); False writes
            every byte (``-S 0``).
        backing: the new image is an overlay on this (``-B``, with ``-F``). qemu-img 7.2
            then copies only what the source's *top* image holds: ``backing`` must hold
            what the source's own backing holds.
        target_is_zero: ``dst`` exists already and reads as zeroes (``-n
            --target-is-zero``); it excludes ``backing`` and ``preallocation``, as
            qemu-img does.
        existing: ``dst`` exists already (``-n``); qemu-img then writes the source's
            length only: what lies past it in ``dst`` is left as it was.
        out_of_order: ``-W -m 16``: writes in any order, 16 at a time; for a target
            nobody reads before it is complete (a temporary file published whole),
            where it cuts a copy's time by up to a third.
    """
    argv = [QEMU_IMG, "convert"]
    if progress:
        argv.append("-p")
    argv += ["-f", qemu_format(src_fmt), "-O", qemu_format(dst_fmt)]
    if not sparse:
        argv += ["-S", "0"]
    if compress:
        argv.append("-c")
    if out_of_order:
        argv += ["-W", "-m", "16"]
    if backing is not None:
        argv += ["-B", *_backing(backing, backing_fmt)]
    if preallocation:
        argv += ["-o", f"preallocation={preallocation}"]
    if target_is_zero:
        if backing is not None or preallocation:
            raise ValueError("target_is_zero cannot be combined with a backing or "
                             "preallocation (qemu-img refuses both with -n)")
        argv += ["-n", "--target-is-zero"]
    elif existing:
        if backing is not None or preallocation:
            raise ValueError("an existing target cannot be given a backing or "
                             "preallocation (qemu-img refuses both with -n)")
        argv.append("-n")
    return [*argv, "--", _image(src), _image(dst)]


def overlay(path: str, capacity: int, backing: str, backing_fmt: ImageFormat | str) -> list[str]:
    """``qemu-img create`` of a new qcow2 image ``path`` of ``capacity`` bytes whose data,
    until written, is ``backing``'s (a snapshot's new disk, a space-saving clone).
    ``backing`` is recorded as given: a name relative to ``path``'s directory, or an
    absolute path."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"the size must be a positive number of bytes: {capacity!r}")
    return [QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", *_backing(backing, backing_fmt),
            "--", _image(path), str(capacity)]


def resize(
    path: str,
    fmt: ImageFormat | str,
    size: int,
    *,
    shrink: bool = False,
    preallocation: str | None = None,
) -> list[str]:
    """``qemu-img resize`` to an absolute size in bytes (never ``+``/``-`` relative)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"the new size must be a positive number of bytes: {size!r}")
    argv = [QEMU_IMG, "resize", "-f", qemu_format(fmt)]
    if preallocation:
        argv.append(f"--preallocation={preallocation}")
    if shrink:
        argv.append("--shrink")
    return [*argv, "--", _image(path), str(size)]


def measure(
    src: str | None,
    src_fmt: ImageFormat | str | None,
    dst_fmt: ImageFormat | str,
    *,
    size: int | None = None,
) -> list[str]:
    """``qemu-img measure``: the bytes a conversion of ``src`` into ``dst_fmt`` needs, or
    (``size``, no ``src``) a new empty image of that size needs."""
    argv = [QEMU_IMG, "measure", "--output=json"]
    if size is not None:
        if src is not None:
            raise ValueError("measure takes a source image or a size, not both")
        return [*argv, "-O", qemu_format(dst_fmt), "--size", str(size)]
    if src is None or not src_fmt:
        raise ValueError("measure needs a source image and its format, or a size")
    return [*argv, "-f", qemu_format(src_fmt), "-O", qemu_format(dst_fmt), "--",
            _image(src)]


@dataclass(frozen=True)
class Measure:
    """``qemu-img measure``: ``required`` bytes for the copy as it is, and
    ``fully_allocated`` when every cluster gets written (preallocation)."""

    required: int
    fully_allocated: int


def parse_measure(stdout: bytes) -> Measure:
    """Parse ``qemu-img measure --output=json``; ``ValueError`` when it is not that."""
    try:
        data = json.loads(stdout)
        required, full = data["required"], data["fully-allocated"]
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"not qemu-img measure output: {err}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in (required, full)):
        raise ValueError("qemu-img measure gave sizes that are not byte counts")
    return Measure(required, full)


REPAIRS = ("leaks", "all")


def check(
    path: str,
    fmt: ImageFormat | str,
    *,
    repair: str | None = None,
    force_share: bool = False,
    output_json: bool = True,
) -> list[str]:
    """``qemu-img check`` of the image's own metadata, its backing chain cut off (a
    check never needs the backing, and a backing named in an untrusted header is never
    opened: a missing one would also make the check fail).

    ``force_share`` (``-U``) lets a read-only check look at an image a QEMU has open
    (its result may then be inconsistent); a repair (``-r leaks|all``) opens the image
    for writing, where qemu refuses ``-U``: asking for both is a ``ValueError``.
    """
    if repair is not None and repair not in REPAIRS:
        raise ValueError(f"repair is one of {REPAIRS}, not {repair!r}")
    if repair is not None and force_share:
        raise ValueError("a repair writes the image: it cannot be shared (-U)")
    argv = [QEMU_IMG, "check"]
    if output_json:
        argv.append("--output=json")
    if force_share:
        argv.append("-U")
    argv += ["-f", qemu_format(fmt)]
    if repair is not None:
        argv += ["-r", repair]
    return [*argv, "--", without_backing(_image(path))]


# qemu-img check's exit status, as its manual documents it.
CHECK_STATUS = {0: "clean", 1: "error", 2: "corrupt", 3: "leaks", 63: "unsupported"}


@dataclass(frozen=True)
class CheckResult:
    """What ``qemu-img check`` found. ``status``: clean (no problem), error (the check
    could not complete), corrupt (corruptions, leaks maybe too), leaks (leaked clusters
    only: wasted space, no harm to data), unsupported (the format has no check, e.g.
    raw), or unknown (an exit status qemu-img does not document). ``message`` is the
    last line qemu-img wrote on stderr (why it failed), "" when it said nothing."""

    status: str
    returncode: int
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int | None = None
    allocated_clusters: int = 0
    total_clusters: int = 0
    fragmented_clusters: int = 0
    message: str = ""

    @property
    def clean(self) -> bool:
        return self.status == "clean"


def parse_check(returncode: int, stdout: bytes, stderr: bytes = b"") -> CheckResult:
    """Map ``qemu-img check``'s exit status and JSON report into a ``CheckResult``."""
    status = CHECK_STATUS.get(returncode, "unknown")
    try:
        data = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}

    def count(key: str) -> int:
        value = data.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    end = data.get("image-end-offset")
    lines = stderr.decode(errors="replace").strip().splitlines()
    return CheckResult(
        status=status,
        returncode=returncode,
        corruptions=count("corruptions"),
        leaks=count("leaks"),
        check_errors=count("check-errors"),
        corruptions_fixed=count("corruptions-fixed"),
        leaks_fixed=count("leaks-fixed"),
        image_end_offset=end if isinstance(end, int) and not isinstance(end, bool) else None,
        allocated_clusters=count("allocated-clusters"),
        total_clusters=count("total-clusters"),
        fragmented_clusters=count("fragmented-clusters"),
        message=lines[-1].removeprefix("qemu-img: ") if lines else "",
    )


def rebase(
    path: str,
    fmt: ImageFormat | str,
    backing: str | None,
    backing_fmt: ImageFormat | str | None,
    *,
    unsafe: bool,
    progress: bool = False,
) -> list[str]:
    """``qemu-img rebase`` onto ``backing``. Safe mode (``unsafe=False``) compares the old
    and new backing and writes into the image whatever differs; unsafe (``-u``) only
    rewrites the name. ``backing=None`` makes the image standalone (``-b ""``)."""
    argv = [QEMU_IMG, "rebase"]
    if progress:
        argv.append("-p")
    argv += ["-f", qemu_format(fmt)]
    if unsafe:
        argv.append("-u")
    if backing is None:
        argv += ["-b", ""]
    else:
        argv += ["-b", *_backing(backing, backing_fmt)]
    return [*argv, "--", _image(path)]


def _option_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).replace(",", ",,")  # qemu's option syntax escapes "," as ",,"


def amend(path: str, fmt: ImageFormat | str, options: Mapping[str, str | int | bool]) -> list[str]:
    """``qemu-img amend -o k=v,...`` (e.g. ``{"compat": "1.1"}``); values are escaped."""
    if not options:
        raise ValueError("amend needs at least one option")
    for key in options:
        if not key or any(c in key for c in ",=") or key.startswith("-"):
            raise ValueError(f"not an image option name: {key!r}")
    joined = ",".join(f"{k}={_option_value(v)}" for k, v in options.items())
    return [QEMU_IMG, "amend", "-f", qemu_format(fmt), "-o", joined, "--", _image(path)]


def commit(path: str, fmt: ImageFormat | str, *, progress: bool = True,
           keep: bool = False) -> list[str]:
    """``qemu-img commit``: write the image's data into its backing file. ``keep``
    (``-d``): the image keeps its data instead of being emptied, so it can still be
    compared with its backing afterwards."""
    argv = [QEMU_IMG, "commit"]
    if progress:
        argv.append("-p")
    if keep:
        argv.append("-d")
    return [*argv, "-f", qemu_format(fmt), "--", _image(path)]


def compare(a: str, a_fmt: ImageFormat | str, b: str, b_fmt: ImageFormat | str) -> list[str]:
    """``qemu-img compare``: exit 0 identical, 1 different, 2 error. Images of different
    sizes compare equal when the larger one holds only zeroes past the smaller's end."""
    return [QEMU_IMG, "compare", "-f", qemu_format(a_fmt), "-F", qemu_format(b_fmt), "--",
            _image(a), _image(b)]


def read_head(src: str, fmt: ImageFormat | str, out: str, length: int) -> list[str]:
    """``qemu-img dd`` of the first ``length`` guest bytes of ``src`` into the new raw file
    ``out`` (to read the file system inside a qcow2). ``dd`` takes ``if=``/``of=``, which
    never read as options; it cannot write to a pipe (it truncates its output)."""
    return [QEMU_IMG, "dd", "-f", qemu_format(fmt), "-O", "raw", f"bs={length}", "count=1",
            f"if={_image(src)}", f"of={_image(out)}"]
