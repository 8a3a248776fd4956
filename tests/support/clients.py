"""Drive the real skopeo and podman CLIs in isolated, per-test state directories."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .env import find_binary
from .proc import DEFAULT_TIMEOUT, run

DOCKER_PREFIX = "docker://"
NO_PROXY = "127.0.0.1,localhost,::1"
ACCEPT_ANYTHING_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
# Short names would make podman consult search registries; tests always use host:port/repo refs.
REGISTRIES_CONF = 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'


def skopeo_binary() -> str:
    """Path to skopeo, or skip/fail with an install hint."""
    return find_binary("skopeo", ["/usr/bin/skopeo"], hint="install the Debian package 'skopeo'")


def podman_binary() -> str:
    """Path to podman, or skip/fail with an install hint."""
    return find_binary("podman", ["/usr/bin/podman"], hint="install the Debian package 'podman'")


def _tls(flag: str, verify: bool) -> str:
    """Render a boolean flag explicitly, since some default to true."""
    return f"--{flag}={'true' if verify else 'false'}"


def _isolated_home(home: Path) -> None:
    """A private $HOME so user-level containers config (policy, auth, registries.d) is ours."""
    conf = home / ".config" / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "policy.json").write_text(json.dumps(ACCEPT_ANYTHING_POLICY))
    (conf / "registries.d").mkdir(exist_ok=True)


def _empty_authfile(path: Path) -> None:
    """podman refuses an --authfile that does not exist yet, so start with no credentials."""
    if not path.exists():
        path.write_text(json.dumps({"auths": {}}))


def _base_env(tmpdir: Path, authfile: Path, registries_conf: Path) -> dict[str, str]:
    """Environment shared by both tools: no machine config, no proxies for loopback."""
    env = dict(os.environ)
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        env.pop(name, None)
    env.update(
        {
            "HOME": str(tmpdir / "home"),
            "TMPDIR": str(tmpdir / "tmp"),
            "REGISTRY_AUTH_FILE": str(authfile),
            "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
            "NO_PROXY": NO_PROXY,
            "no_proxy": NO_PROXY,
        }
    )
    return env


class Skopeo:
    """skopeo with its own auth file, policy and temp dir; no TLS verification for docker://."""

    def __init__(self, tmpdir: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.binary = skopeo_binary()
        self.dir = Path(tmpdir)
        self.timeout = timeout
        self.authfile = self.dir / "auth.json"
        self.policy = self.dir / "policy.json"
        self.registries_conf = self.dir / "registries.conf"
        self.registries_d = self.dir / "registries.d"
        for sub in ("tmp", "home", "registries.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        _isolated_home(self.dir / "home")
        self.policy.write_text(json.dumps(ACCEPT_ANYTHING_POLICY))
        self.registries_conf.write_text(REGISTRIES_CONF)
        _empty_authfile(self.authfile)
        self.env = _base_env(self.dir, self.authfile, self.registries_conf)

    def _global_args(
        self, override_arch: str | None = None, override_os: str | None = None
    ) -> list[str]:
        """Flags that go before the subcommand."""
        args = [
            "--policy",
            str(self.policy),
            "--registries.d",
            str(self.registries_d),
            "--tmpdir",
            str(self.dir / "tmp"),
        ]
        if override_arch:
            args += ["--override-arch", override_arch]
        if override_os:
            args += ["--override-os", override_os]
        return args

    def run(
        self,
        *args: str,
        input: str | None = None,
        override_arch: str | None = None,
        override_os: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run `skopeo [global flags] ARGS`; return stdout or raise CommandError."""
        result = run(
            [self.binary, *self._global_args(override_arch, override_os), *args],
            input=input,
            env=self.env,
            timeout=timeout or self.timeout,
        )
        return result.stdout

    def _registry_args(self, ref: str, creds: str | None) -> list[str]:
        """--authfile always; plain-HTTP/self-signed for docker:// refs; explicit creds if given."""
        args = ["--authfile", str(self.authfile)]
        if ref.startswith(DOCKER_PREFIX):
            args.append(_tls("tls-verify", False))
        if creds:
            args += ["--creds", creds]
        return args

    def login(self, registry: str, user: str, password: str) -> str:
        """Store credentials for registry in this client's auth file."""
        return self.run(
            "login",
            "--authfile",
            str(self.authfile),
            _tls("tls-verify", False),
            "--username",
            user,
            "--password-stdin",
            registry,
            input=password + "\n",
        )

    def logout(self, registry: str) -> str:
        """Forget the credentials for registry."""
        return self.run("logout", "--authfile", str(self.authfile), registry)

    def copy(
        self,
        src: str,
        dst: str,
        *,
        all: bool = False,
        override_arch: str | None = None,
        override_os: str | None = None,
        creds: str | None = None,
        src_creds: str | None = None,
        dest_creds: str | None = None,
        format: str | None = None,
        preserve_digests: bool = False,
        extra: Sequence[str] = (),
    ) -> str:
        """`skopeo copy SRC DST`; creds ('user:pass') applies to whichever side is docker://."""
        args = ["copy", "--authfile", str(self.authfile)]
        if src.startswith(DOCKER_PREFIX):
            args.append(_tls("src-tls-verify", False))
            if src_creds or creds:
                args += ["--src-creds", src_creds or creds or ""]
        if dst.startswith(DOCKER_PREFIX):
            args.append(_tls("dest-tls-verify", False))
            if dest_creds or creds:
                args += ["--dest-creds", dest_creds or creds or ""]
        if all:
            args.append("--all")
        if format:
            args += ["--format", format]
        if preserve_digests:
            args.append("--preserve-digests")
        args += [*extra, src, dst]
        return self.run(*args, override_arch=override_arch, override_os=override_os)

    def inspect(
        self,
        ref: str,
        raw: bool = False,
        *,
        config: bool = False,
        creds: str | None = None,
        override_arch: str | None = None,
        override_os: str | None = None,
    ) -> dict[str, Any]:
        """Parsed `skopeo inspect` output; raw=True gives the manifest (or index) itself."""
        text = self._inspect_text(ref, raw, config, creds, override_arch, override_os)
        return dict(json.loads(text))

    def manifest_bytes(
        self, ref: str, *, creds: str | None = None, override_arch: str | None = None
    ) -> bytes:
        """The exact manifest bytes the registry serves, for digest comparisons."""
        return self._inspect_text(ref, True, False, creds, override_arch, None).encode()

    def _inspect_text(
        self,
        ref: str,
        raw: bool,
        config: bool,
        creds: str | None,
        override_arch: str | None,
        override_os: str | None,
    ) -> str:
        """Shared body of inspect and manifest_bytes."""
        args = ["inspect", *self._registry_args(ref, creds)]
        if raw:
            args.append("--raw")
        if config:
            args.append("--config")
        return self.run(*args, ref, override_arch=override_arch, override_os=override_os)

    def delete(self, ref: str, *, creds: str | None = None) -> str:
        """Delete the manifest ref points to."""
        return self.run("delete", *self._registry_args(ref, creds), ref)

    def list_tags(self, ref: str, *, creds: str | None = None) -> list[str]:
        """Tags of the repository ref names (docker://HOST/REPO)."""
        out = self.run("list-tags", *self._registry_args(ref, creds), ref)
        return list(json.loads(out).get("Tags") or [])


class Podman:
    """Rootful, daemonless podman whose storage, config and auth all live in tmpdir."""

    def __init__(self, tmpdir: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.binary = podman_binary()
        self.dir = Path(tmpdir)
        self.timeout = timeout
        self.root = self.dir / "root"
        # podman rejects a runroot longer than 50 characters, so it can't live in pytest's tmp_path.
        self.runroot = Path(tempfile.mkdtemp(prefix="qm-podman-", dir="/tmp"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.runroot, True)
        self.libpod_tmp = self.dir / "libpod-tmp"
        self.authfile = self.dir / "auth.json"
        self.policy = self.dir / "home" / ".config" / "containers" / "policy.json"
        self.containers_conf = self.dir / "containers.conf"
        self.storage_conf = self.dir / "storage.conf"
        self.registries_conf = self.dir / "registries.conf"
        for path in (self.root, self.runroot, self.libpod_tmp, self.dir / "tmp", self.dir / "home"):
            path.mkdir(parents=True, exist_ok=True)
        _isolated_home(self.dir / "home")
        self._write_config()
        _empty_authfile(self.authfile)
        self.env = _base_env(self.dir, self.authfile, self.registries_conf)
        self.env.update(
            {
                "CONTAINERS_CONF": str(self.containers_conf),
                "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            }
        )

    def close(self) -> None:
        """Remove the short-lived runroot outside tmpdir (storage in tmpdir is left to pytest)."""
        self._cleanup()

    def __enter__(self) -> Podman:
        """Use as a context manager so the runroot is always cleaned up."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Clean up the runroot even when the test failed."""
        self.close()

    def _write_config(self) -> None:
        """Config files so nothing is read from /etc/containers."""
        self.registries_conf.write_text(REGISTRIES_CONF)
        self.storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        self.containers_conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.dir / "events.log"}"\n'
            f'tmp_dir = "{self.libpod_tmp}"\n'
            f'image_copy_tmp_dir = "{self.dir / "tmp"}"\n'
            "[network]\n"
            f'network_config_dir = "{self.dir / "networks"}"\n'
        )

    def _global_args(self) -> list[str]:
        """Storage and engine flags given on every call (belt and braces with the conf files)."""
        return [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--tmpdir",
            str(self.libpod_tmp),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def run(
        self, *args: str, input: str | None = None, timeout: float | None = None, check: bool = True
    ) -> str:
        """Run `podman [global flags] ARGS`; return stdout or raise CommandError."""
        result = run(
            [self.binary, *self._global_args(), *args],
            input=input,
            env=self.env,
            timeout=timeout or self.timeout,
            check=check,
        )
        return result.stdout

    def _auth_args(self, tls_verify: bool, creds: str | None) -> list[str]:
        """Auth file, TLS choice and optional inline credentials for registry commands."""
        args = ["--authfile", str(self.authfile), _tls("tls-verify", tls_verify)]
        if creds:
            args += ["--creds", creds]
        return args

    def login(self, registry: str, user: str, password: str, tls_verify: bool = False) -> str:
        """Store credentials for registry in this client's auth file."""
        return self.run(
            "login",
            "--authfile",
            str(self.authfile),
            _tls("tls-verify", tls_verify),
            "--username",
            user,
            "--password-stdin",
            registry,
            input=password + "\n",
        )

    def logout(self, registry: str | None = None) -> str:
        """Forget credentials for registry, or for all registries when none is given."""
        target = [registry] if registry else ["--all"]
        return self.run("logout", "--authfile", str(self.authfile), *target)

    def import_(self, tarball: str | Path, ref: str, *, changes: Sequence[str] = ()) -> str:
        """Create an image from a rootfs tarball; returns the new image ID."""
        change_args = [arg for change in changes for arg in ("--change", change)]
        out = self.run("import", "--quiet", *change_args, str(tarball), ref)
        return out.strip().splitlines()[-1].removeprefix("sha256:")

    def load(self, archive: str | Path) -> list[str]:
        """Load a docker-archive/oci-archive tarball; returns the names podman reports."""
        out = self.run("load", "--input", str(archive))
        names: list[str] = []
        for line in out.splitlines():
            if line.startswith("Loaded image"):
                names += [n.strip() for n in line.split(":", 1)[1].split(",") if n.strip()]
        return names

    def tag(self, image: str, *targets: str) -> None:
        """Add one or more names to an image."""
        self.run("tag", image, *targets)

    def push(
        self,
        ref: str,
        tls_verify: bool = False,
        *,
        dest: str | None = None,
        format: str | None = None,
        creds: str | None = None,
        digestfile: str | Path | None = None,
    ) -> str:
        """Push a local image (to dest if given, else to ref itself)."""
        args = ["push", *self._auth_args(tls_verify, creds)]
        if format:
            args += ["--format", format]
        if digestfile:
            args += ["--digestfile", str(digestfile)]
        args.append(ref)
        if dest:
            args.append(dest)
        return self.run(*args)

    def pull(
        self,
        ref: str,
        tls_verify: bool = False,
        arch: str | None = None,
        *,
        os_name: str | None = None,
        creds: str | None = None,
    ) -> str:
        """Pull ref (optionally a specific architecture); returns the image ID."""
        args = ["pull", "--quiet", *self._auth_args(tls_verify, creds)]
        if arch:
            args += ["--arch", arch]
        if os_name:
            args += ["--os", os_name]
        out = self.run(*args, ref)
        return out.strip().splitlines()[-1]

    def rmi(self, *refs: str, force: bool = False) -> str:
        """Remove local images."""
        return self.run("rmi", *(["--force"] if force else []), *refs)

    def image_exists(self, ref: str) -> bool:
        """Whether a local image with this name or ID exists."""
        result = run(
            [self.binary, *self._global_args(), "image", "exists", ref],
            env=self.env,
            timeout=self.timeout,
            check=False,
        )
        if result.returncode not in (0, 1):
            self.run("image", "exists", ref)  # re-run to raise with the output attached
        return result.returncode == 0

    def inspect(self, ref: str) -> dict[str, Any]:
        """`podman image inspect` of one image."""
        data = json.loads(self.run("image", "inspect", ref))
        return dict(data[0])

    def images(self) -> list[dict[str, Any]]:
        """`podman images --format json`."""
        out = self.run("images", "--format", "json")
        return list(json.loads(out or "[]"))

    def env_with(self, extra: Mapping[str, str]) -> dict[str, str]:
        """This client's environment plus overrides, for callers that spawn podman themselves."""
        return {**self.env, **extra}
