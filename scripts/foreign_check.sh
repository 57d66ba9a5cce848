#!/usr/bin/env bash
# The runtime on a Python and a CPU this machine does not have: a Debian root (debootstrap) per target, the runtime
# installed from the committed tree into a venv inside it, the torch-free tests, then one upscale of the shipped
# sample in fp32 and in int8, each compared with the host's output of the same command.
#
#   sudo scripts/foreign_check.sh py39     Debian 11 bullseye, Python 3.9 (the oldest the torch extra supports)
#   sudo scripts/foreign_check.sh arm64    Debian 12 bookworm on arm64 under qemu-user (the Raspberry Pi 5's OS)
#
# The root is built once and cached outside the repository (FOREIGN_CHECK_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/mambaesr-foreign/<target>); later runs reuse it and only reinstall the runtime.
# Each run refreshes its own section of benchmarks/results/foreign_check.md. Minutes under emulation: never in
# .ci/run. Needs root (debootstrap, chroot, mount) and the Debian mirror and PyPI.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/foreign_check.sh {py39|arm64}

  py39    Debian 11 (bullseye), Python 3.9, amd64
  arm64   Debian 12 (bookworm), Python 3.11, arm64 under qemu-user-static (as Dockerfile.rpi)

Environment: FOREIGN_CHECK_CACHE (where the roots live; default ~/.cache/mambaesr-foreign),
FOREIGN_CHECK_MIRROR (Debian mirror; default http://deb.debian.org/debian),
FOREIGN_CHECK_TESTS (test paths under tests/, space-separated; default all of tests/: about 4 minutes natively,
much longer under qemu).
EOF
}

die() {
    echo "foreign_check: error: $*" >&2
    exit 2
}

if [[ $# -ne 1 ]]; then
    usage >&2
    die "expected exactly one target (py39 or arm64), got $#"
fi
target=$1
case $target in
    py39) suite=bullseye arch=amd64 ;;
    arm64) suite=bookworm arch=arm64 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown target '$target' (expected py39 or arm64)" ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot and mount need it)"
for tool in debootstrap chroot git mount umount findmnt python3; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install -y debootstrap qemu-user-static binfmt-support)"
done

repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cache=${FOREIGN_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mambaesr-foreign}
mirror=${FOREIGN_CHECK_MIRROR:-http://deb.debian.org/debian}
tests=()
for path in ${FOREIGN_CHECK_TESTS:-.}; do
    [[ $path != *..* && -e $repo/tests/$path ]] || die "FOREIGN_CHECK_TESTS: no tests/$path in the checkout"
    tests+=("/opt/mambaesr/tests/$path")
done
root=$cache/$target
marker=$root/.foreign_check_root   # written last by a complete build: a root without it is rebuilt
results=$repo/benchmarks/results/foreign_check.md
# The same Debian packages as Dockerfile.rpi's (python3-venv brings ensurepip; ca-certificates for PyPI).
packages=python3,python3-venv,ca-certificates
commit=$(git -C "$repo" rev-parse --short HEAD)
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
    echo "foreign_check: note: uncommitted changes are not checked (the root gets HEAD, $commit)" >&2
fi

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || echo "foreign_check: could not unmount ${mounts[i]}" >&2
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "foreign_check[$target]: $*" >&2; }

# --- qemu for arm64 -------------------------------------------------------------------------------------------------
if [[ $arch == arm64 && $(uname -m) != aarch64 ]]; then
    binfmt=/proc/sys/fs/binfmt_misc
    if ! findmnt -rn "$binfmt" >/dev/null; then
        mount -t binfmt_misc binfmt_misc "$binfmt"
    fi
    if [[ ! -e $binfmt/qemu-aarch64 ]]; then
        [[ -r /usr/lib/binfmt.d/qemu-aarch64.conf ]] || die "no qemu-aarch64 binfmt entry (apt-get install -y qemu-user-static binfmt-support)"
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register"
    fi
    grep -qx enabled "$binfmt/qemu-aarch64" || die "the qemu-aarch64 binfmt handler is registered but disabled"
fi

# --- phase 1: the root (once) ---------------------------------------------------------------------------------------
if [[ -f $marker ]]; then
    root_time="reused ($(cat "$marker"))"
    log "reusing $root ($(cat "$marker"))"
else
    if findmnt -rn -o TARGET | grep -qF "$root"; then
        die "something is still mounted under $root; unmount it first"
    fi
    rm -rf --one-file-system "$root.partial" "$root"
    mkdir -p "$cache"
    log "debootstrap $suite ($arch) into $root (minutes; under emulation, tens of minutes)"
    start=$SECONDS
    debootstrap --arch="$arch" --variant=minbase --include="$packages" "$suite" "$root.partial" "$mirror" \
        >"$cache/$target.debootstrap.log" 2>&1 || die "debootstrap failed; see $cache/$target.debootstrap.log"
    mv "$root.partial" "$root"
    echo "built $(date -u +%Y-%m-%d) in $((SECONDS - start)) s" >"$marker"
    root_time="$((SECONDS - start)) s"
fi
# qemu's binfmt entry opens its interpreter at registration (flag F); without that flag the root needs its own copy.
if [[ $arch == arm64 && $(uname -m) != aarch64 ]] && ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    cp /usr/bin/qemu-aarch64-static "$root/usr/bin/"
fi

# --- mounts, the committed tree, the host's CA bundle ---------------------------------------------------------------
bind() {  # bind <source> <target under root> [ro]
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    mounts+=("$root$2")
    if [[ ${3:-} == ro ]]; then
        mount -o remount,bind,ro "$root$2"
    fi
}
mkdir -p "$root/proc"
mount -t proc proc "$root/proc"
mounts+=("$root/proc")
bind /dev /dev
# Read-only /sys natively: ONNX Runtime's cpuinfo reads the processor lists there (without it: "cpuinfo_initialize
# failed", and it falls back to generic kernels' detection). Not under qemu-user: there its aarch64 cpuinfo parses the
# host's x86 topology and qemu's /proc/cpuinfo and segfaults in `import onnxruntime` (qemu 7.2, onnxruntime 1.32).
if [[ $arch != arm64 || $(uname -m) == aarch64 ]]; then
    bind /sys /sys ro
fi
# The real data beside the checkout (../shared, as in CI), read-only, for the tests that use it; absent, they skip.
if [[ -d $repo/../shared ]]; then
    bind "$(readlink -f "$repo/../shared")" /opt/shared ro
fi
# The chroot sees exactly the committed tree (pip builds in it, so it is a copy, not the checkout itself).
rm -rf "$root/opt/mambaesr" "$root/opt/out"
mkdir -p "$root/opt/mambaesr" "$root/opt/out"
git -C "$repo" archive HEAD | tar -x -C "$root/opt/mambaesr"
# An egress proxy that re-signs TLS needs the host's CA bundle inside the root too.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/foreign_check_ca.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# Under emulation pip's byte-compiling of numpy, onnxruntime and opencv takes most of the install (about 25 min on a
# 2-core host); the root compiles lazily what the run imports instead. Natively pip compiles as Dockerfile.rpi does.
pip_env=()
if [[ $arch == arm64 && $(uname -m) != aarch64 ]]; then
    pip_env=(PIP_NO_COMPILE=1)
fi
in_root() {  # a clean environment: nothing of the host's pip configuration leaks in
    env -i HOME=/root LANG=C.UTF-8 PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/foreign_check_ca.crt SSL_CERT_FILE=/etc/foreign_check_ca.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "${pip_env[@]}" \
        chroot "$root" /bin/sh -c "cd /opt/mambaesr && $1"
}

# --- phase 2: install (as Dockerfile.rpi: a venv, then pip install ".[opencv]") -------------------------------------
start=$SECONDS
log "install"
in_root '/usr/bin/python3 -m venv --clear /opt/venv && pip install -q ".[opencv]" && pip install -q ".[test]"' \
    >"$root/opt/out/install.log" 2>&1 || { tail -30 "$root/opt/out/install.log" >&2; die "install failed (log above)"; }
install_time=$((SECONDS - start))
versions=$(in_root 'python -c "import platform, numpy, onnxruntime, cv2, PIL, pytest
print(\"Python %s (%s), numpy %s, onnxruntime %s, opencv %s, Pillow %s, pytest %s\" % (platform.python_version(),
      platform.machine(), numpy.__version__, onnxruntime.__version__, cv2.__version__, PIL.__version__,
      pytest.__version__))"')
log "$versions"

# --- phase 3: the tests (those needing torch or onnx skip with the reason) ------------------------------------------
# From /tmp, and pytest rather than python -m pytest: the tree's folder on sys.path (python -m, or the tests'
# `python -c` subprocesses in the tree) would import its sources instead of the installed package, and those lack
# profiles_data (profiles/ is mapped to it only by the install).
start=$SECONDS
log "tests"
set +e
in_root "cd /tmp && pytest -q -p no:cacheprovider --junitxml=/opt/out/junit.xml ${tests[*]}" >"$root/opt/out/tests.log" 2>&1
tests_rc=$?
set -e
tests_time=$((SECONDS - start))
tail -5 "$root/opt/out/tests.log" >&2

# --- phase 4: upscale the shipped sample, fp32 and int8, here and on the host ---------------------------------------
sample=mambaesr_runtime/data/sample.png
start=$SECONDS
log "upscale (fp32, int8)"
in_root "mambaesr-run --device rpi5 $sample -o /opt/out/fp32.png -q &&
         mambaesr-run --device rpi5 --precision int8 $sample -o /opt/out/int8.png -q" \
    >"$root/opt/out/upscale.log" 2>&1 || { cat "$root/opt/out/upscale.log" >&2; die "upscale in the root failed"; }
upscale_time=$((SECONDS - start))

# The host's reference: the same tree, the same install command, in a venv beside the roots.
host=$cache/host
rm -rf "$host/src" "$host/out"
mkdir -p "$host/src" "$host/out"
git -C "$repo" archive HEAD | tar -x -C "$host/src"
(cd "$host/src" && python3 -m venv --clear "$host/venv" && "$host/venv/bin/pip" install -q ".[opencv]") \
    >"$host/install.log" 2>&1 || { tail -30 "$host/install.log" >&2; die "host install failed (log above)"; }
(cd "$host/src" && "$host/venv/bin/mambaesr-run" --device rpi5 "$sample" -o "$host/out/fp32.png" -q &&
    "$host/venv/bin/mambaesr-run" --device rpi5 --precision int8 "$sample" -o "$host/out/int8.png" -q) \
    || die "upscale on the host failed"

# --- the results section --------------------------------------------------------------------------------------------
set +e
FC_SUITE=$suite FC_ARCH=$arch FC_COMMIT=$commit FC_VERSIONS=$versions FC_TESTS_RC=$tests_rc \
    FC_TESTS=${FOREIGN_CHECK_TESTS:-all of tests/} FC_ROOT_TIME=$root_time FC_INSTALL_TIME=$install_time \
    FC_TESTS_TIME=$tests_time FC_UPSCALE_TIME=$upscale_time FC_TOTAL_TIME=$SECONDS \
    "$host/venv/bin/python" - "$target" "$results" "$root/opt/out" "$host/out" "$host/venv/bin/python" <<'PYEOF'
import collections, datetime, os, re, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

target, results, guest, host, host_python = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
env = os.environ
now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
# Tolerances against the host (8-bit output): ONNX Runtime's kernels differ in the last bits across CPUs (other SIMD
# widths and summation orders; arm64's int8 path uses other u8s8 kernels), never by more than this.
TOL = {"fp32": (50.0, 2), "int8": (40.0, 8)}  # (min PSNR dB, max abs difference)
ok = True
rows = []
for name in ("fp32", "int8"):
    a = np.asarray(Image.open(guest / f"{name}.png").convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(host / f"{name}.png").convert("RGB"), dtype=np.float64)
    if a.shape != b.shape:
        rows.append(f"| {name} | shape {a.shape} vs host {b.shape} | - | - | FAIL |")
        ok = False
        continue
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    diff = int(np.abs(a - b).max())
    good = psnr >= TOL[name][0] and diff <= TOL[name][1]
    ok &= good
    rows.append(f"| {name} | {'identical' if mse == 0 else f'{psnr:.2f} dB'} | {diff} | "
                f">= {TOL[name][0]:.0f} dB, <= {TOL[name][1]} | {'ok' if good else 'FAIL'} |")

suite = ET.parse(guest / "junit.xml").getroot()
counts = collections.Counter()
for case in suite.iter("testcase"):
    counts[next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")] += 1
# The reasons from pytest's -ra summary ("SKIPPED [n] file:line: reason"; a whole module skipped counts once).
log = (guest / "tests.log").read_text(encoding="utf-8", errors="replace").splitlines()
reasons = collections.Counter()
for line in log:
    m = re.match(r"SKIPPED \[(\d+)\] \S+?(?::\d+)?: (.*)", line)
    if m:
        reasons[m.group(2)[:200]] += int(m.group(1))
failed = [line for line in log if re.match(r"(FAILED|ERROR) ", line)]
host_versions = subprocess.run([host_python, "-c", "import platform, numpy, onnxruntime; print('Python %s (%s), "
                                "numpy %s, onnxruntime %s' % (platform.python_version(), platform.machine(), "
                                "numpy.__version__, onnxruntime.__version__))"],
                               capture_output=True, text=True, check=True).stdout.strip()
lines = [f"<!-- foreign_check {target}: begin (written by scripts/foreign_check.sh {target}) -->",
         f"### {target}: Debian {env['FC_SUITE']} ({env['FC_ARCH']})",
         "",
         f"Run {now} on commit {env['FC_COMMIT']}.",
         "",
         f"- guest: {env['FC_VERSIONS']}",
         f"- host: {host_versions}",
         f"- tests: {counts['passed']} passed, {counts['skipped']} skipped, {counts['failure']} failed, "
         f"{counts['error']} errors (pytest exit {env['FC_TESTS_RC']}; ran: {env['FC_TESTS']})",
         f"- wall times: root build {env['FC_ROOT_TIME']}; install {env['FC_INSTALL_TIME']} s; tests {env['FC_TESTS_TIME']} s; "
         f"upscale (fp32 + int8) {env['FC_UPSCALE_TIME']} s; the whole script {env['FC_TOTAL_TIME']} s",
         "",
         "Skip reasons (tests):",
         ""]
lines += [f"- {n} x {r}" for r, n in reasons.most_common()] or ["- none"]
if failed:
    lines += ["", "Failed:", "", *[f"- `{line}`" for line in failed]]
lines += ["", "Upscale of mambaesr_runtime/data/sample.png (`mambaesr-run --device rpi5`, x4) vs the host's output:",
          "", "| precision | PSNR vs host | max abs diff | tolerance | |", "|---|---|---|---|---|", *rows,
          f"<!-- foreign_check {target}: end -->"]
block = "\n".join(lines)
text = results.read_text(encoding="utf-8") if results.exists() else (
    "# Foreign check: the runtime on another Python and another CPU\n\n"
    "Written by `scripts/foreign_check.sh {py39,arm64}` (one section per target; never part of .ci/run).\n")
pattern = re.compile(rf"<!-- foreign_check {target}: begin.*?<!-- foreign_check {target}: end -->", re.S)
text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
results.write_text(text, encoding="utf-8")
print(block)
sys.exit(0 if ok else 1)
PYEOF
compare_rc=$?
set -e
if [[ $tests_rc -ne 0 ]]; then
    echo "foreign_check: tests failed in the $target root (pytest exit $tests_rc); see $root/opt/out/tests.log" >&2
fi
if [[ $compare_rc -ne 0 ]]; then
    echo "foreign_check: the $target output is outside the tolerance against the host (table above), or the" \
        "results could not be written (traceback above)" >&2
fi
[[ $tests_rc -eq 0 && $compare_rc -eq 0 ]]
