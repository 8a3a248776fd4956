"""`quaymaster fsck`: compare the database with what storage holds, and optionally repair."""

import asyncio
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from quaymaster.cli.common import config_dir_option, fail, settings_or_exit
from quaymaster.content import fsck as checker
from quaymaster.settings import Settings
from quaymaster.settings.units import parse_duration
from quaymaster.storage import StorageError

LABELS = {
    checker.Kind.MISSING: "missing",
    checker.Kind.WRONG_SIZE: "wrong size",
    checker.Kind.CHECKSUM: "checksum mismatch",
    checker.Kind.ORPHAN: "orphan",
    checker.Kind.UNRECORDED: "unrecorded copy",
}
ORDER = {kind: i for i, kind in enumerate(LABELS)}


def _min_age(_ctx, _param, value: str) -> int:
    try:
        return int(value) if value.strip().isdigit() else parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _bytes(n: int | None) -> str:
    return "? bytes" if n is None else f"{n} bytes"


def describe(problem: checker.Problem) -> str:
    """One line of detail for a problem, after its kind, location and digest."""
    p = problem
    if p.kind is checker.Kind.MISSING:
        text = f"recorded ({_bytes(p.recorded_size)}) but the object is not in storage"
    elif p.kind is checker.Kind.WRONG_SIZE:
        text = f"object holds {_bytes(p.stored_size)}, the database records {_bytes(p.recorded_size)}"
    elif p.kind is checker.Kind.CHECKSUM:
        text = f"object content hashes to {p.actual_digest}"
    elif p.kind is checker.Kind.ORPHAN:
        text = f"{_bytes(p.stored_size)}, no blob row in the database"
    else:
        text = (f"{_bytes(p.stored_size)}, the blob is recorded without this location"
                + ("; content verified" if p.verified else ""))
    if p.kind in (checker.Kind.WRONG_SIZE, checker.Kind.CHECKSUM) and not p.placed:
        text += " (a copy the database does not record here)"
    if p.fixed or p.note:
        text += " [" + ": ".join(part for part in ("fixed" if p.fixed else "", p.note) if part) + "]"
    return text


def print_report(report: checker.FsckReport, drivers: dict[str, str], repaired: bool) -> None:
    for name, summary in report.locations.items():
        driver = drivers.get(name, "?")
        verified = f", {summary.verified} verified" if report.verify else ""
        click.echo(f"location {name} ({driver}): {summary.objects} objects, {_size(summary.bytes)}; "
                   f"{summary.placements} recorded in the database{verified}")
        problems = sorted((p for p in report.problems if p.location == name), key=lambda p: (ORDER[p.kind], p.digest))
        width = max((len(LABELS[p.kind]) for p in problems), default=0)
        for p in problems:
            click.echo(f"  {LABELS[p.kind]:<{width}}  {p.digest}  {describe(p)}")
    for name, count in report.unknown_locations.items():
        click.echo(f"warning: {count} blobs are recorded in location {name!r}, which is not configured; "
                   "not checked", err=True)
    fixed = len(report.problems) - len(report.remaining)
    if report.clean:
        summary = "clean" if not report.problems else f"clean after repair ({fixed} fixed)"
    else:
        summary = f"{len(report.remaining)} problem{'s' if len(report.remaining) != 1 else ''}"
        if repaired:
            summary += f" remain ({fixed} fixed)"
        elif any(p.kind in (checker.Kind.ORPHAN, checker.Kind.UNRECORDED) for p in report.problems):
            summary += "; --repair removes old orphans and records unrecorded copies"
    if not report.verify:
        summary += "; contents not verified (--verify)"
    click.echo(f"fsck: {summary}")


async def _run(settings: Settings, verify: bool, repair: bool, min_age: int):
    from quaymaster.workers import worker_context

    async with worker_context(settings) as ctx:
        report = await checker.check(ctx, verify=verify)
        if repair and report.remaining:
            await checker.repair(ctx, report, min_age_s=min_age)
        return report


@click.command("fsck")
@config_dir_option
@click.option("--verify", is_flag=True, help="Also read every blob and compare its content with its digest (slow).")
@click.option("--repair", is_flag=True,
              help="Remove orphan objects older than --min-age and record unrecorded copies. "
                   "Never deletes an object the database records.")
@click.option("--min-age", default="1h", show_default=True, callback=_min_age, metavar="DURATION",
              help="Orphans younger than this are kept: a push may have written the bytes and not yet its row.")
def fsck(config_dir: Path, verify: bool, repair: bool, min_age: int) -> None:
    """Report drift between the database and storage: recorded blobs missing from storage,
    objects with no blob row (orphans), copies the database does not record, wrong sizes,
    and with --verify, content that does not match its digest.

    Exit status: 0 when clean, 1 when problems remain (after --repair, fixed ones do not
    count), 2 when the check could not run (usage, configuration, database or storage errors).
    """
    settings = settings_or_exit(config_dir)
    try:
        report = asyncio.run(_run(settings, verify, repair, min_age))
    except StorageError as err:
        fail(f"storage: {err}", 2)
    except SQLAlchemyError as err:
        fail(f"database: {err.__class__.__name__}: {err}", 2)
    except OSError as err:
        fail(str(err), 2)
    print_report(report, {loc.name: loc.driver for loc in settings.storage_locations}, repair)
    sys.exit(0 if report.clean else 1)
