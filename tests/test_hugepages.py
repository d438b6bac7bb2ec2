"""hmr_jax.hugepages: when the process re-executes with glibc's hugetlb tunable, and that it does."""

import os
import platform
import subprocess
import sys

from hmr_jax import hugepages

LINUX = ("Linux", ("glibc", "2.36"), "madvise")


def test_adds_the_tunable_on_linux_glibc():
    env = hugepages.reexec_environment({"PATH": "/bin"}, *LINUX)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_keeps_other_tunables():
    env = hugepages.reexec_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, *LINUX)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_no_reexec_when_it_cannot_help_or_is_decided():
    cases = [
        ({}, "Darwin", ("", ""), "madvise"),  # not Linux
        ({}, "Linux", ("musl", "1.2"), "madvise"),  # not glibc
        ({}, "Linux", ("glibc", "2.31"), "madvise"),  # tunable not in this glibc
        ({}, "Linux", ("glibc", "2.36"), "never"),  # no transparent huge pages
        ({}, "Linux", ("glibc", "2.36"), None),  # unknown
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, *LINUX),  # the user decided
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, *LINUX),  # already re-executed: no loop
        ({"HMR_JAX_HUGEPAGES": "0"}, *LINUX),  # opted out
    ]
    for environ, system, libc, thp in cases:
        assert hugepages.reexec_environment(environ, system, libc, thp) is None, (environ, system, libc, thp)


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    p = tmp_path / "enabled"
    p.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(str(p)) == "madvise"
    assert hugepages.thp_mode(str(tmp_path / "missing")) is None


def test_ensure_reexecutes_the_same_command_with_the_tunable():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HMR_JAX_HUGEPAGES")}
    code = (
        "import os, sys; from hmr_jax import hugepages; print('start', os.getpid(), flush=True); "
        "hugepages.ensure(); print('args', sys.argv[1:], os.getpid(), os.environ.get('GLIBC_TUNABLES'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "a", "--b=1"], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    expect = hugepages.reexec_environment(env, platform.system(), platform.libc_ver(), hugepages.thp_mode())
    starts = [line for line in out if line.startswith("start")]
    (args,) = [line for line in out if line.startswith("args")]
    pid = starts[0].split()[1]
    if expect is None:  # nothing to do on this machine: one run, unchanged environment
        assert len(starts) == 1 and args == f"args ['a', '--b=1'] {pid} None"
    else:  # the same process (PID) ran the command again, with the same arguments, once
        assert len(starts) == 2 and starts[1] == starts[0]
        assert args == f"args ['a', '--b=1'] {pid} glibc.malloc.hugetlb=1"
