"""What every benchmark script shares: child processes that report JSON and their peak RSS,
the machine's description, and updating one section of ``bench/RESULTS.md``.

Each measurement runs in a fresh interpreter (``<script> --child KIND JSON``) so measurements
never pollute each other; the parent reads the child's peak RSS from ``os.wait4`` (KiB on Linux).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
RESULT_MARK = "@@BENCH@@ "


def self_maxrss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(script: str | Path, kind: str, env: dict[str, str] | None = None, **kwargs) -> dict:
    """Run ``script --child kind <json kwargs>``; return its JSON plus ``maxrss_kib``."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", kind, json.dumps(kwargs)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed with exit code {proc.returncode}:\n{out}")
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        raise SystemExit(f"child {kind} printed no result:\n{out}")
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["maxrss_kib"] = usage.ru_maxrss
    return result


def child_main(children: dict, kind: str, kwargs: str) -> int:
    """Body of ``--child``: run one child function, print its JSON result."""
    result = children[kind](**json.loads(kwargs))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def machine(packages: tuple[str, ...] = ("polars",)) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_kib = 0
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_kib = int(m.group(1)) if m else 0
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_kib / 1024 / 1024,
        "python": platform.python_version(),
        "packages": {p: importlib.metadata.version(p) for p in packages},
        # kept for the ingest bench's text
        "polars": importlib.metadata.version("polars"),
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line(mach: dict) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in mach["packages"].items())
    return (f"- machine: {mach['cpu']}, {mach['cores']} cores (`os.cpu_count()`), {mach['ram_gib']:.1f} GiB RAM, "
            f"{mach['os']}; Python {mach['python']}, {pkgs}")


def write_results(path: Path, title: str, section: str) -> None:
    """Replace the section headed ``title`` (a ``## `` line) in ``path``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == title), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        after = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + after if after else "")
    path.write_text(new)


def emit(section: str, lines: list[str], write: bool = True, path: Path = RESULTS) -> None:
    """Print a results section and (unless ``write`` is False) replace it in ``bench/RESULTS.md``."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_results(path, section, text)
        print(f"written to {path}")


def base_tree(work: Path, commit: str) -> Path:
    """A detached git worktree of ``commit`` under ``work`` (made once): the "before" code a
    benchmark imports through ``PYTHONPATH``."""
    tree = work / f"base-{commit[:12]}"
    if not (tree / "quant_assets").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), commit], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    return tree

