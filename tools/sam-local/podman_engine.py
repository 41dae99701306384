"""A podman Docker-API service private to one run, and the Lambda image `sam local` runs.

Private: its containers.conf, storage (root, runroot, driver), runc state, scratch files and
socket live in the run's own directory (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TMPDIR and
a runtime flag), so the images and containers of a run are invisible to any other podman
user on the machine and disappear with the directory. /etc/containers is neither read for
these settings nor changed. The one file written elsewhere is named at SYSTEM_BLOB_CACHE.

Each setting avoids an error podman meets with its defaults on hosts such as a VM with mixed
cgroup hierarchies: no default ulimits (raising RLIMIT_NOFILE is not permitted), cgroupfs and
runc (crun refuses hybrid cgroups). Besides: the `vfs` storage driver (works wherever the
directory lives, also inside another container), host network namespaces by default and the
CNI backend with a private configuration directory (no network is created, and nothing is
written to /etc/cni, /var/lib/cni or /run/containers).

No image can be pulled, so the image SAM runs is imported from a folder: SAM builds its
`...:<runtime>-rapid-<arch>` image itself only when none exists, by adding the runtime
interface emulator (which ships inside the SAM CLI package) to the base image. Importing
the finished image under that name, emulator included, skips that build (with
`--skip-pull-image`, SAM does not look for a newer base) and with it any container build.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
netns = "host"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "{tmp}"
image_copy_tmp_dir = "{tmp}"

[network]
network_backend = "cni"
network_config_dir = "{network}"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}"
runroot = "{runroot}"
"""

# What a `provided.al2023` function needs from the image besides its own code (`/var/task`,
# mounted by SAM): a shell and the few commands SAM's image tooling may use, the C library
# files the binaries link against (found with ldd), CA certificates (the SDK's TLS setup
# fails without them) and a writable /tmp.
BUSYBOX_COMMANDS = ("sh", "mv", "chmod", "cp", "rm", "ls", "cat", "env", "mkdir")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The one file podman writes outside the run's folder: containers/image keeps root's
# blob-info cache at this fixed path whatever the storage settings, and an import writes it.
# The run removes it (and the folders it needed) when the run created it.
SYSTEM_BLOB_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64"}


class EngineError(Exception):
    """podman could not be prepared or started; the message says what to do."""


class PodmanEngine:
    def __init__(self, run_dir, socket_dir):
        self.dir = Path(run_dir) / "podman"
        self.socket_path = Path(socket_dir) / "podman.sock"
        self.log_path = self.dir / "service.log"
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
            # podman's scratch files (one per container start) go to TMPDIR, else /var/tmp.
            "TMPDIR": str(self.dir / "tmp"),
        }
        # runc keeps container state under /run/runc unless told otherwise; no configuration
        # file says otherwise, so every podman command of the run passes the flag.
        self.global_flags = ["--runtime-flag", f"root={self.dir / 'runc'}"]
        self._service = None
        self._created_outside = []

    def start(self, timeout_seconds=30):
        """Writes the private configuration and starts `podman system service` on the socket."""
        for sub in ("root", "runroot", "tmp", "network", "runc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(
            CONTAINERS_CONF.format(tmp=self.dir / "tmp", network=self.dir / "network")
        )
        (self.dir / "storage.conf").write_text(
            STORAGE_CONF.format(root=self.dir / "root", runroot=self.dir / "runroot")
        )
        with open(self.log_path, "wb") as log:
            self._service = subprocess.Popen(
                ["podman", *self.global_flags, "system", "service", "--time=0", f"unix://{self.socket_path}"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._service.poll() is not None:
                raise EngineError(f"podman system service exited with {self._service.returncode}: {self._log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.1)
        raise EngineError(f"podman system service did not answer on {self.socket_path} within {timeout_seconds} s")

    def _answers_ping(self):
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(2)
                client.connect(str(self.socket_path))
                client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                status_line = client.recv(64).split(b"\r\n", 1)[0]
                return status_line.startswith(b"HTTP/1.") and status_line.split(b" ")[1:2] == [b"200"]
        except OSError:
            return False

    def _log_tail(self):
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def podman(self, *args):
        """Runs a podman command against this run's storage; raises with its output on failure."""
        result = subprocess.run(["podman", *self.global_flags, *args], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineError(f"podman {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def import_lambda_image(self, work_dir, name, binaries, rie_binary, busybox):
        """Imports the image SAM runs a `provided` function in, from a folder built here."""
        root = Path(work_dir) / "image"
        for sub in ("bin", "tmp", "var/task", "var/rapid", "etc/ssl/certs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for command in BUSYBOX_COMMANDS:
            (root / "bin" / command).symlink_to("busybox")
        shutil.copy2(rie_binary, root / "var" / "rapid" / "aws-lambda-rie")
        (root / "var" / "rapid" / "aws-lambda-rie").chmod(0o755)
        if not CA_BUNDLE.exists():
            raise EngineError(f"{CA_BUNDLE} is missing: install the ca-certificates package")
        shutil.copy2(CA_BUNDLE, root / "etc" / "ssl" / "certs" / CA_BUNDLE.name)
        for library in shared_libraries([busybox, *binaries]):
            target = root / library.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(library.resolve(), target)
        archive = Path(work_dir) / "image.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        if not self._created_outside:
            self._created_outside = [
                p
                for p in (SYSTEM_BLOB_CACHE.parent.parent, SYSTEM_BLOB_CACHE.parent, SYSTEM_BLOB_CACHE)
                if not p.exists()
            ]
        self.podman("import", "--change", 'ENTRYPOINT ["/bin/sh"]', str(archive), name)
        archive.unlink()
        shutil.rmtree(root)

    def container_ids(self):
        return self.podman("ps", "--all", "--quiet").split()

    def close(self):
        """Removes every container and image of this run's storage (nothing else is in it),
        stops the service and removes what the run created outside its folder. Returns the
        problems met, for the caller to report: clean-up goes on past each."""
        problems = []
        if self._service is not None:
            for args in (("rm", "--all", "--force", "--time", "2"), ("rmi", "--all", "--force")):
                try:
                    self.podman(*args)
                except EngineError as error:
                    problems.append(str(error))
            self._stop_service()
        for path in reversed(self._created_outside):
            # A folder another podman user has taken into use meanwhile stays: theirs now.
            with contextlib.suppress(OSError):
                path.unlink() if path == SYSTEM_BLOB_CACHE else path.rmdir()
        self._created_outside = []
        return problems

    def _stop_service(self):
        """Stops the service this object started, by its PID, and waits for it."""
        if self._service.poll() is None:
            self._service.send_signal(signal.SIGTERM)
            try:
                self._service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._service.kill()
                self._service.wait(timeout=5)


def shared_libraries(executables):
    """The shared libraries (and dynamic loader) the executables load, as ldd resolves them."""
    libraries = set()
    for executable in executables:
        result = subprocess.run(["ldd", str(executable)], capture_output=True, text=True)
        if result.returncode != 0:
            continue  # a static executable: ldd says "not a dynamic executable"
        for line in result.stdout.splitlines():
            parts = line.split()
            path = next((p for p in parts if p.startswith("/")), None)
            if path:
                libraries.add(Path(path))
    return sorted(libraries)


def lambda_architecture():
    """This machine's architecture as Lambda names it (the functions are built for it)."""
    machine = os.uname().machine
    if machine not in ARCHITECTURES:
        raise EngineError(f"no Lambda architecture for this machine's {machine}")
    return ARCHITECTURES[machine]
