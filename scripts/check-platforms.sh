#!/usr/bin/env bash
# Checks ming on Debian 13 (trixie) in a chroot kept outside the repo: builds it in Release and
# runs the whole ctest suite against trixie's LibTorch 2.6 (cpu), or builds the CUDA + NCCL
# flavour against trixie's libtorch-cuda-dev 2.6 and checks that every target compiles and links
# (cuda; no GPU needed, none used). The repo is only read: the sources are copied into the root.
#
#   scripts/check-platforms.sh            # cpu
#   scripts/check-platforms.sh cuda       # CUDA 12.4 + NCCL flavour, compile + link
#   scripts/check-platforms.sh cpu cuda   # both, one after the other
#   scripts/check-platforms.sh --prepare-only cuda   # only make or refresh the root (no build)
#
# Environment:
#   MING_PLATFORM_CACHE   where the roots live (default /var/cache/ming-platforms); one root per
#                         mode, reused when complete, rebuilt when half-made or made for other inputs
#   MING_DEBIAN_MIRROR    Debian archive (default http://deb.debian.org/debian)
#   MING_PLATFORM_REFRESH_DAYS  upgrade a root's packages when older than this (default 7)
#   MING_DATA             data folder for the tests (default ../shared/data beside the repo)
#   MING_JOBS             build jobs (default 2)
# Needs root (debootstrap, chroot, mount). Every phase's wall time, the LibTorch version and the
# outcome go to $MING_PLATFORM_CACHE/results/<mode>.txt, rewritten after each check that passes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${MING_PLATFORM_CACHE:-/var/cache/ming-platforms}
mirror=${MING_DEBIAN_MIRROR:-http://deb.debian.org/debian}
refresh_days=${MING_PLATFORM_REFRESH_DAYS:-7}
data=${MING_DATA:-$repo/../shared/data}
jobs=${MING_JOBS:-2}
suite=trixie
components=main,contrib,non-free

say() { echo "check-platforms: $*" >&2; }
die() { say "error: $*"; exit 1; }

prepare_only=false
modes=()
for arg in "$@"; do
  case $arg in
    cpu | cuda) modes+=("$arg") ;;
    --prepare-only) prepare_only=true ;;
    *) echo "usage: $0 [--prepare-only] [cpu] [cuda]" >&2; exit 2 ;;
  esac
done
((${#modes[@]})) || modes=(cpu)
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot and mount)"
[[ -d $data ]] || die "no data folder at $data (set MING_DATA)"
data=$(cd "$data" && pwd)

# Build dependencies: scripts/setup.sh's list (so the two cannot drift), plus ccache, with the
# CUDA flavour's replacements: libtorch-cuda-dev conflicts with libtorch-dev, and Debian's Gloo
# for CUDA LibTorch is libgloo-cuda-dev.
setup_packages() {
  sed -n '/^packages=(/,/)/p' "$repo/scripts/setup.sh" | tr -d '()' | sed 's/^packages=//' | xargs
}
packages_for() {
  local list
  list="$(setup_packages) ccache"
  if [[ $1 == cuda ]]; then
    list=$(echo "$list" | sed 's/\blibtorch-dev\b/libtorch-cuda-dev/; s/\blibgloo-dev\b/libgloo-cuda-dev/')
    list="$list nvidia-cuda-toolkit libnccl-dev"
  fi
  echo "$list"
}

seconds() { date +%s; }
declare -A took=()
timed() { # timed NAME command...: runs it, records its wall time under NAME, keeps its status
  local name=$1 start rc=0
  shift
  start=$(seconds)
  "$@" || rc=$?
  took[$name]=$(($(seconds) - start))
  local outcome=""
  ((rc == 0)) || outcome=" (failed, status $rc)"
  say "$name: $((took[$name] / 60)) min $((took[$name] % 60)) s$outcome"
  return $rc
}

# ---- mounts ----------------------------------------------------------------
mounted_under() { # mount points at or below $1, deepest first
  awk -v r="$1" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}
unmount_all() {
  local m
  for m in $(mounted_under "$1"); do umount "$m" 2>/dev/null || umount -l "$m"; done
}
mount_root() { # /proc, /dev, a private /dev/shm, the compiler cache, the data read-only
  local r=$1
  mkdir -p "$r/proc" "$r/dev" "$r/ccache" "$r/src/shared/data" "$cache/ccache"
  mount -t proc proc "$r/proc"
  mount --bind /dev "$r/dev"
  mount --bind /dev/pts "$r/dev/pts"
  mount -t tmpfs -o size=1g tmpfs "$r/dev/shm"
  mount --bind "$cache/ccache" "$r/ccache"
  mount --bind "$data" "$r/src/shared/data"
  mount -o remount,bind,ro "$r/src/shared/data"
}
active_root=""
cleanup() { [[ -z $active_root ]] || unmount_all "$active_root"; }
trap cleanup EXIT
with_root_mounted() { # with_root_mounted ROOT command...: runs it with ROOT's mounts in place
  local rc=0
  active_root=$1
  mount_root "$1"
  shift
  "$@" || rc=$?
  unmount_all "$active_root"
  active_root=""
  return $rc
}

in_root() { # in_root ROOT command...: runs in the chroot with a clean environment
  local r=$1
  shift
  chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# ---- the root --------------------------------------------------------------
# A root is complete when its stamp (written last) matches what it was made from; anything else
# under that name (an interrupted debootstrap, a failed install, other inputs) is removed first.
remove_root() {
  local r=$1
  unmount_all "$r"
  [[ -z $(mounted_under "$r") ]] || die "cannot unmount everything under $r; not removing it"
  rm -rf --one-file-system "$r"
}

archive_reachable() {
  local url="$mirror/dists/$suite/Release"
  if command -v curl >/dev/null; then
    curl -fsS --max-time 30 -o /dev/null "$url"
  elif command -v wget >/dev/null; then
    wget -q -T 30 -O /dev/null "$url"
  else
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=30)" "$url"
  fi
}
need_archive() {
  archive_reachable 2>/dev/null ||
    die "the Debian archive is not reachable ($mirror/dists/$suite/Release); a $suite root" \
      "needs it (no network? set MING_DEBIAN_MIRROR to a reachable mirror). Nothing was changed."
}
need_debootstrap() {
  command -v debootstrap >/dev/null && return
  say "installing debootstrap on this machine"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
    die "debootstrap is not installed and apt-get could not install it"
}

# nvidia-cudnn (pulled in by libtorch-cuda-dev) is an installer: its post-install script downloads
# cuDNN from NVIDIA, which these machines cannot reach. Its post-install is replaced by a no-op so
# that everything else configures; libcudnn.so.9 stays absent, which is why the CUDA flavour links
# with -Wl,--allow-shlib-undefined and its binaries cannot run here.
neutralise_cudnn_download() {
  local r=$1 postinst=$1/var/lib/dpkg/info/nvidia-cudnn.postinst
  [[ -f $postinst ]] || return 0
  say "WORKAROUND: nvidia-cudnn's post-install (downloads cuDNN from NVIDIA) replaced by a no-op;" \
    "cuDNN is NOT installed in this root"
  printf '#!/bin/sh\n# ming check-platforms: the cuDNN download is skipped (no access to NVIDIA)\nexit 0\n' >"$postinst"
  in_root "$r" dpkg --configure -a
}

install_packages() { # install_packages ROOT MODE
  local r=$1 mode=$2
  in_root "$r" apt-get update -q || return 1
  # shellcheck disable=SC2046
  if ! in_root "$r" apt-get install -y -q --no-install-recommends $(packages_for "$mode"); then
    [[ $mode == cuda ]] || return 1
    neutralise_cudnn_download "$r" || return 1
    # shellcheck disable=SC2046
    in_root "$r" apt-get install -y -q --no-install-recommends $(packages_for "$mode") || return 1
  fi
  in_root "$r" apt-get clean
  [[ -z $(in_root "$r" dpkg --audit) ]] || { in_root "$r" dpkg --audit; return 1; }
}

refresh_packages() { # refresh_packages ROOT
  in_root "$1" apt-get update -q && in_root "$1" apt-get dist-upgrade -y -q &&
    in_root "$1" apt-get clean
}

# A root is complete when its stamp, written last, names what it was made from: one line for the
# system (suite, mirror, components), one for the build dependencies. Another system line, or no
# stamp at all (an interrupted debootstrap or install), rebuilds it from nothing; another
# dependency line (scripts/setup.sh changed) installs the difference; an old stamp upgrades it.
prepare_root() { # prepare_root MODE: leaves a complete, up-to-date root at $cache/$suite-MODE
  local mode=$1 r=$cache/$suite-$1
  local system="system: suite=$suite mirror=$mirror components=$components"
  local deps="packages: $(packages_for "$mode")"
  local stamp=$r/.ming-root-complete
  if [[ -f $stamp && $(head -n 1 "$stamp") == "$system" ]]; then
    if [[ $(sed -n 2p "$stamp") != "$deps" ]]; then
      need_archive
      say "the $mode root $r lacks build dependencies added since it was made: installing them"
      with_root_mounted "$r" timed "$mode: dependency install" install_packages "$r" "$mode" ||
        die "installing the build dependencies into $r failed"
    elif [[ -n $(find "$stamp" -mtime +"$refresh_days") ]]; then
      need_archive
      say "refreshing the $mode root $r (its packages are older than $refresh_days days)"
      with_root_mounted "$r" timed "$mode: refresh" refresh_packages "$r" ||
        die "refreshing $r failed"
    else
      say "reusing the complete $mode root $r"
      return
    fi
    printf '%s\n%s\n' "$system" "$deps" >"$stamp"
    return
  fi
  if [[ -e $r ]]; then
    if [[ -f $stamp ]]; then
      say "the $mode root $r was made from another system ($(head -n 1 "$stamp")): it is rebuilt"
    else
      say "the $mode root $r is half-made (no completion stamp): it is rebuilt"
    fi
  fi
  need_archive
  need_debootstrap
  [[ -e $r ]] && remove_root "$r"
  mkdir -p "$cache/debs"
  say "creating the $mode root $r ($suite from $mirror)"
  timed "$mode: root creation" debootstrap --variant=minbase --components="$components" \
    --cache-dir="$cache/debs" "$suite" "$r" "$mirror" || die "debootstrap failed; $r is left half-made"
  printf 'deb %s %s %s\n' "$mirror" "$suite" "${components//,/ }" >"$r/etc/apt/sources.list"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  say "installing the build dependencies into the $mode root: ${deps#packages: }"
  with_root_mounted "$r" timed "$mode: dependency install" install_packages "$r" "$mode" ||
    die "installing the build dependencies into $r failed; it is left half-made"
  printf '%s\n%s\n' "$system" "$deps" >"$stamp"
}

# ---- build and test --------------------------------------------------------
tested_commit=""
copy_sources() { # the checkout's files (tracked and untracked, not ignored) into ROOT/src/ming
  local r=$1
  tested_commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "not a git checkout")
  rm -rf --one-file-system "$r/src/ming"
  mkdir -p "$r/src/ming"
  if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" ls-files -z -c -o --exclude-standard | (cd "$repo" && tar --null -T - -cf -) |
      tar -C "$r/src/ming" -xf -
  else
    tar -C "$repo" --exclude='./build*' -cf - . | tar -C "$r/src/ming" -xf -
  fi
}

build_in_root() { # build_in_root ROOT MODE LOG [cmake args]
  local r=$1 mode=$2 log=$3
  in_root "$r" MING_DATA=/src/shared/data BUILD_DIR="/build/$mode" CCACHE_DIR=/ccache \
    CMAKE_CXX_COMPILER_LAUNCHER=ccache MING_JOBS="$jobs" MING_CMAKE_ARGS="${4:-}" \
    nice -n 10 bash /src/ming/scripts/setup.sh > >(tee -a "$log") 2>&1
}
suite_in_root() { # suite_in_root ROOT MODE LOG
  local r=$1 mode=$2 log=$3
  in_root "$r" MING_DATA=/src/shared/data bash -c \
    "cd /build/$mode && nice -n 10 ctest --output-on-failure -j $jobs" > >(tee -a "$log") 2>&1
}

check_mode() {
  local mode=$1 r=$cache/$suite-$1 torch_package=libtorch-dev log summary
  [[ $mode == cuda ]] && torch_package=libtorch-cuda-dev
  prepare_root "$mode"
  active_root=$r
  mount_root "$r"
  copy_sources "$r"
  local torch compiler
  torch=$(in_root "$r" dpkg-query -W -f='${Package} ${Version}' "$torch_package")
  compiler="gcc $(in_root "$r" gcc -dumpfullversion)"
  mkdir -p "$cache/results"
  log=$cache/results/$mode.log
  : >"$log"
  say "building ming ($mode: $torch, $compiler) in $r/build/$mode; log in $log"
  if [[ $mode == cpu ]]; then
    timed "$mode: build" build_in_root "$r" "$mode" "$log" || die "the $mode build failed (see $log)"
    timed "$mode: suite" suite_in_root "$r" "$mode" "$log" || true
    summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1)
    [[ $summary == "100% tests passed"* ]] || die "the $mode suite failed: ${summary:-no summary} (see $log)"
  else
    local flags=-Wl,--allow-shlib-undefined
    say "WORKAROUND: linking with $flags, because libtorch_cuda.so needs libcudnn.so.9, which" \
      "nvidia-cudnn could not download: the binaries are linked, NOT runnable here"
    timed "$mode: build" build_in_root "$r" "$mode" "$log" "-DMING_CUDA=ON -DMING_NCCL=ON \
      -DCMAKE_EXE_LINKER_FLAGS=$flags -DCMAKE_SHARED_LINKER_FLAGS=$flags" ||
      die "the $mode build failed (see $log)"
    local b=$r/build/$mode tool missing=() needed
    for tool in "$repo"/tools/ming-*.cpp; do
      tool=$(basename "$tool" .cpp)
      [[ -x $b/$tool ]] || missing+=("$tool")
    done
    [[ -x $b/tests/ming-tests ]] || missing+=(ming-tests)
    ((${#missing[@]} == 0)) || die "the $mode build did not link: ${missing[*]}"
    needed=$(in_root "$r" readelf -d "/build/$mode/libming.so" | grep -oE 'lib(torch_cuda|nccl|c10_cuda)[^]]*' | sort -u | xargs)
    [[ $needed == *libnccl* && $needed == *libtorch_cuda* ]] ||
      die "libming.so does not link CUDA LibTorch and NCCL (needs: ${needed:-neither})"
    summary="every target compiled and linked: libming.so (needs $needed), $(ls "$repo"/tools/ming-*.cpp | wc -l) tools, ming-tests"
  fi
  unmount_all "$r"
  active_root=""
  local result=$cache/results/$mode.txt phase
  {
    echo "passed: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "mode: $mode ($suite, $torch, $compiler)"
    echo "commit: $tested_commit (as copied into the root)"
    echo "result: $summary"
    for phase in "root creation" "dependency install" refresh build suite; do
      [[ -z ${took[$mode: $phase]:-} ]] || echo "seconds $phase: ${took[$mode: $phase]}"
    done
  } >"$result"
  say "$mode passed; recorded in $result:"
  sed 's/^/  /' "$result" >&2
}

main() {
  local mode
  for mode in "${modes[@]}"; do
    if $prepare_only; then prepare_root "$mode"; else check_mode "$mode"; fi
  done
}
# On one line, so that bash has read all of it before it runs: editing this file during a run
# then cannot feed the running shell half a line.
main; exit
