"""A private PostgreSQL server for the tests of many workers on one study: Debian's postgresql
binaries (.ci/run installs them), a cluster in a temporary folder, a Unix socket only, stopped at
the end. Skipped, with the reason, where the binaries are missing."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest


def binaries():
    """The folder of initdb and pg_ctl, or None."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def as_owner(command, owner):
    """`command`, run as `owner` when this process is root (initdb refuses root)."""
    if owner is None:
        return command
    return ["runuser", "-u", owner, "--", *command]


@pytest.fixture(scope="session")
def postgres_url():
    folder = binaries()
    if folder is None:
        pytest.skip("no PostgreSQL binaries (Debian's postgresql package; .ci/run installs it)")
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user to run the server as")
        owner = "postgres"
    root = tempfile.mkdtemp(prefix="obdsd_postgres_")
    data, socket = os.path.join(root, "data"), os.path.join(root, "socket")
    os.makedirs(socket)
    if owner:
        shutil.chown(root, owner)
        shutil.chown(socket, owner)

    def run(*command):
        return subprocess.run(as_owner(list(command), owner), check=True, capture_output=True, text=True)

    run(os.path.join(folder, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    port = "55432"
    run(os.path.join(folder, "pg_ctl"), "-D", data, "-w", "-l", os.path.join(root, "server.log"), "-o",
        f"-p {port} -k {socket} -c listen_addresses='' -c fsync=off", "start")
    try:
        run(os.path.join(folder, "createdb"), "-h", socket, "-p", port, "-U", "postgres", "studies")
        yield f"postgresql://postgres@/studies?host={socket}&port={port}"
    finally:
        subprocess.run(as_owner([os.path.join(folder, "pg_ctl"), "-D", data, "-m", "immediate", "stop"], owner),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
