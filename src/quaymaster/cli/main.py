"""Entry point: `quaymaster <command>`."""

import click

from quaymaster import __version__
from quaymaster.cli.config import config
from quaymaster.cli.fsck import fsck
from quaymaster.cli.gc import gc
from quaymaster.cli.generate import generate
from quaymaster.cli.migrate import migrate
from quaymaster.cli.registry import registry
from quaymaster.cli.repomirror import repomirror
from quaymaster.cli.scanner import scanner
from quaymaster.cli.user import user
from quaymaster.cli.worker import worker


@click.group()
@click.version_option(__version__, prog_name="quaymaster")
def main() -> None:
    """Quaymaster: a container image registry compatible with Red Hat Quay."""


main.add_command(registry)
main.add_command(user)
main.add_command(migrate)
main.add_command(config)
main.add_command(generate)
main.add_command(worker)
main.add_command(gc)
main.add_command(fsck)
main.add_command(repomirror)
main.add_command(scanner)
