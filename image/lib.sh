# Shared by image/build, image/flash and the image tests: steps with timings, host packages,
# the cached base root, the payload (seeder package + board files + first boot), the disk
# layout. Sourced, not run. Not for the device: nothing here runs on the board.
# shellcheck shell=bash

# The disk layout (MiB). The Lime2's boot ROM reads the loader at 8 KiB; it ends before 1 MiB.
LOADER_OFFSET_KIB=8
BOOT_START_MIB=4
BOOT_SIZE_MIB=124
ROOT_START_MIB=128
BOOT_LABEL=SEEDER-BOOT
ROOT_LABEL=seeder-root

_steps=()
_step_name=""
_step_started=0
_build_started=$(date +%s)

say() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- Failing loudly, cleaning up always ---------------------------------------------------------
# Every script that sources this file calls `strict_mode` first. Then:
#   - a failing command ends the script (errexit, also in functions and $(…): errtrace,
#     inherit_errexit), and so does a failure anywhere in a pipeline (pipefail). Pipelines here
#     never let their consumer stop early (no `head`, `grep -q`, `awk … exit` reading from a
#     producer): under pipefail the producer's SIGPIPE (status 141) would end the build.
#   - the ERR trap prints the file, line, command and status of what failed, with its callers,
#     so no failure is silent;
#   - INT, TERM and HUP end the script through its EXIT trap, which runs the clean-ups
#     registered with `at_exit` (last first): work folders are unmounted before they are removed.
strict_mode() {
  set -Eeuo pipefail
  shopt -s inherit_errexit
  trap '_report_error $? "$BASH_COMMAND"' ERR
  trap _run_at_exit EXIT
  trap 'say "interrupted (SIGHUP): cleaning up"; exit 129' HUP
  trap 'say "interrupted (SIGINT): cleaning up"; exit 130' INT
  trap 'say "interrupted (SIGTERM): cleaning up"; exit 143' TERM
}

_report_error() {
  local status=$1 command=$2 i
  printf "error: %s:%s: '%s' failed with status %s\n" \
    "${BASH_SOURCE[1]##*/}" "${BASH_LINENO[0]}" "$command" "$status" >&2
  for ((i = 1; i < ${#FUNCNAME[@]} - 1; i++)); do
    printf '  in %s, called from %s:%s\n' "${FUNCNAME[i]}" "${BASH_SOURCE[i + 1]##*/}" "${BASH_LINENO[i]}" >&2
  done
  case $status in
    141) printf '  (status 141 is SIGPIPE: a pipeline whose reader stopped early)\n' >&2 ;;
  esac
}

_at_exit=()
# Run COMMAND ARG… when the script ends, however it ends (last registered, first run). The
# words are kept quoted (printf %q), so any path is safe in them.
at_exit() { _at_exit+=("$(printf '%q ' "$@")"); }

_run_at_exit() {
  local status=$? i
  trap - ERR
  # A second Ctrl-C must not cut the clean-up short (that could leave /dev mounted).
  trap '' INT TERM HUP
  set +e
  for ((i = ${#_at_exit[@]} - 1; i >= 0; i--)); do
    eval "${_at_exit[i]}"
  done
  _at_exit=()
  exit "$status"
}

# Mount points at or below DIR, as the kernel lists them, NUL-separated (any byte may be in a
# path; mountinfo escapes them as octal, which is decoded here).
mounts_under() {
  python3 - "$1" <<'PY'
import os, re, sys
top = os.fsencode(os.path.realpath(sys.argv[1]))
with open("/proc/self/mountinfo", "rb") as f:
    for line in f:
        raw = line.split(b" ")[4]
        p = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)
        if p == top or p.startswith(top + b"/"):
            sys.stdout.buffer.write(p + b"\0")
PY
}

# Whether anything is mounted at or below DIR.
has_mounts_under() {
  local m
  while IFS= read -r -d '' m; do
    return 0
  done < <(mounts_under "$1")
  return 1
}

# Unmount everything at or below DIR, deepest first; a busy mount is detached lazily.
# Returns 1 if anything is still mounted there.
undo_mounts_under() {
  local m
  while IFS= read -r -d '' m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "cannot unmount $m"
  done < <(mounts_under "$1" | sort -rz)
  ! has_mounts_under "$1"
}

# A temporary work folder in VAR, removed when the script ends, after everything mounted inside
# it has been unmounted. If something can't be unmounted the folder is left alone and named:
# removing it could reach into what is mounted there (a bind-mounted /dev, say).
#   make_work_dir VAR PREFIX
make_work_dir() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/var/tmp}/$2.XXXXXX")
  printf -v "$1" '%s' "$dir"
  at_exit remove_work_dir "$dir"
}

remove_work_dir() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if ! undo_mounts_under "$dir"; then
    printf 'error: %q still has mounts inside: not removing it\n' "$dir" >&2
    return 1
  fi
  rm -rf --one-file-system "$dir"
}

# Unmount TARGET if it is still a mount point (lazily if busy).
unmount_if_mounted() {
  if mountpoint -q "$1"; then
    umount "$1" 2>/dev/null || umount -l "$1"
  fi
}

# Mount with the arguments of mount(8); the mount point (the last argument) is unmounted when
# the script ends if nothing unmounted it before. The mount point must be a real folder, not a
# symlink: mount(8) would follow one out of a root being built into the host.
mount_tracked() {
  local target=${!#}
  if [ -L "$target" ] || [ ! -d "$target" ]; then
    die "refusing to mount on $(printf %q "$target"): not a plain folder (a symlink out of the root?)"
  fi
  mount "$@"
  at_exit unmount_if_mounted "$target"
}

_step_done() {
  if [ -n "$_step_name" ]; then
    local took=$(( $(date +%s) - _step_started ))
    _steps+=("$(printf '%-44s %5ss' "$_step_name" "$took")")
    printf '    (%ss)\n' "$took" >&2
  fi
}

step() {
  _step_done
  _step_name="$1"
  _step_started=$(date +%s)
  printf '==> %s\n' "$1" >&2
}

finish_steps() {
  _step_done
  _step_name=""
  printf '==> steps\n' >&2
  printf '%s\n' "${_steps[@]}" >&2
  printf '%-44s %5ss\n' total "$(( $(date +%s) - _build_started ))" >&2
}

need_host_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    say "all present"
  fi
}

# ARM programs in the root (maintainer scripts) run under qemu-user through binfmt_misc.
ensure_binfmt_arm() {
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]; then
    cat /usr/lib/binfmt.d/qemu-arm.conf > /proc/sys/fs/binfmt_misc/register
  fi
  arch-test armhf >/dev/null || die "this machine cannot run armhf programs (qemu-user-static, binfmt_misc)"
}

# Build the armhf package from this checkout; prints its path.
build_deb() {
  local repo=$1
  command -v cargo >/dev/null || die "cargo is needed to build the package (or pass --deb FILE)"
  cargo deb --version >/dev/null 2>&1 || die "cargo-deb is needed: cargo install cargo-deb --locked"
  (cd "$repo" && cargo build --release --locked --target armv7-unknown-linux-gnueabihf -p seeder >&2 &&
    cargo deb -p seeder --no-build --no-strip --target armv7-unknown-linux-gnueabihf >&2)
  newest "$repo"/target/armv7-unknown-linux-gnueabihf/debian/seeder_*_armhf.deb
}

# The most recently modified of the given files (prints nothing when none exists).
newest() {
  local f best=""
  for f in "$@"; do
    [ -e "$f" ] || continue
    if [ -z "$best" ] || [ "$f" -nt "$best" ]; then best=$f; fi
  done
  printf '%s' "$best"
  [ -z "$best" ] || printf '\n'
}

# Fetch one file from a Debian suite, verified: InRelease by the archive keyring, the index by
# its hash in InRelease, the file by its hash in the index. Prints nothing; dies on a mismatch.
#   fetch_verified MIRROR SUITE ARCH PACKAGE DEST   (PACKAGE "": only check the index)
fetch_verified() {
  local mirror=$1 suite=$2 arch=$3 package=$4 dest=$5
  local t
  t=$(mktemp -d)
  /usr/lib/apt/apt-helper -oAPT::Sandbox::User=root download-file "$mirror/dists/$suite/InRelease" "$t/InRelease" >/dev/null ||
    die "cannot download $mirror/dists/$suite/InRelease"
  gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg --output "$t/Release" \
    "$t/InRelease" 2>/dev/null || die "$suite's InRelease is not signed by Debian's archive key"
  local index="main/binary-$arch/Packages.xz" want
  want=$(awk -v f="$index" '/^SHA256:/ {s = 1; next} /^[A-Za-z]/ {s = 0} s && $3 == f {print $1}' "$t/Release")
  [ -n "$want" ] || die "$suite has no $index"
  /usr/lib/apt/apt-helper -oAPT::Sandbox::User=root download-file "$mirror/dists/$suite/$index" "$t/Packages.xz" >/dev/null ||
    die "cannot download $index"
  [ "$(sha256sum < "$t/Packages.xz" | cut -d' ' -f1)" = "$want" ] ||
    die "$suite's $index does not match its Release file (mirror out of sync?)"
  if [ -z "$package" ]; then
    rm -rf "$t"
    return 0
  fi
  local entry filename sha
  # The whole index is read (no early exit: see strict_mode); the name is compared exactly.
  entry=$(xz -dc "$t/Packages.xz" | awk -v p="$package" 'BEGIN {RS = ""; FS = "\n"}
    !found { for (i = 1; i <= NF; i++) if ($i == "Package: " p) { print; found = 1; break } }')
  filename=$(printf '%s\n' "$entry" | sed -n 's/^Filename: //p')
  sha=$(printf '%s\n' "$entry" | sed -n 's/^SHA256: //p')
  if [ -z "$filename" ] || [ -z "$sha" ]; then die "$package is not in $suite/$arch"; fi
  /usr/lib/apt/apt-helper -oAPT::Sandbox::User=root download-file "$mirror/$filename" "$t/pkg.deb" "SHA256:$sha" >/dev/null ||
    die "cannot download $mirror/$filename (or its hash differs)"
  # Into place in one step (a copy across file systems first goes beside it).
  mv "$t/pkg.deb" "$dest.part"
  mv "$dest.part" "$dest"
  rm -rf "$t"
}

# Debian's u-boot-sunxi loader for a board (SPL + U-Boot, written at 8 KiB); prints its path.
fetch_loader() {
  local cache=$1 board=$2 mirror=${3:-$(host_mirror)}
  local dir="$cache/u-boot-sunxi"
  mkdir -p "$dir"
  if ! ls "$dir"/u-boot-sunxi_*_armhf.deb >/dev/null 2>&1; then
    fetch_verified "$mirror" bookworm armhf u-boot-sunxi "$dir/download.deb"
    local v
    v=$(dpkg-deb -f "$dir/download.deb" Version)
    mv "$dir/download.deb" "$dir/u-boot-sunxi_${v}_armhf.deb"
  fi
  local debfile
  debfile=$(newest "$dir"/u-boot-sunxi_*_armhf.deb)
  [ -n "$debfile" ] || die "no u-boot-sunxi package"
  local x="$dir/${debfile##*/}.d"
  if [ ! -d "$x" ]; then
    # Extracted aside and renamed: an interrupted extraction never passes for a whole one.
    rm -rf "$x.part"
    dpkg-deb -x "$debfile" "$x.part"
    mv "$x.part" "$x"
  fi
  local f="$x/usr/lib/u-boot/$board/u-boot-sunxi-with-spl.bin"
  [ -f "$f" ] || die "u-boot-sunxi has no loader for $board"
  echo "$f"
}

# The Debian mirror this host uses (falls back to deb.debian.org).
host_mirror() {
  local uri
  local f files=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -eq 0 ] ||
    uri=$(awk '/^(URIs:|deb )/ && !/security|ubuntu/ && !found {
      for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; found = 1; break } }' "${files[@]}")
  echo "${uri:-http://deb.debian.org/debian}"
}

# The packages of the root, one per line, from image/packages.list.
root_packages() {
  sed -e 's/#.*//' -e 's/\[debian\]//' "$(dirname "${BASH_SOURCE[0]}")/packages.list" | tr -d ' \t' | grep -v '^$'
}

# The same without what only Debian's own image needs (kernel, initramfs).
payload_packages() {
  sed -e 's/#.*//' -e '/\[debian\]/d' "$(dirname "${BASH_SOURCE[0]}")/packages.list" | tr -d ' \t' | grep -v '^$'
}

# When was this suite last published? (Part of the cache key: a point release or a security
# update makes a new root.)
suite_date() {
  local url=$1 f
  f=$(mktemp)
  if /usr/lib/apt/apt-helper -oAPT::Sandbox::User=root download-file "$url/InRelease" "$f" >/dev/null 2>&1; then
    sed -n 's/^Date: //p' "$f" | sed -n 1p
  fi
  rm -f "$f"
}

# The configured armhf base root as a tarball: every package of packages.list installed and
# configured (the kernel's initramfs made), nothing of the seeder yet. Cached; prints its path.
base_root() {
  local cache=$1 suite=$2 mirror=$3 snapshot=$4
  local main security
  if [ -n "$snapshot" ]; then
    main="http://snapshot.debian.org/archive/debian/$snapshot"
    security="http://snapshot.debian.org/archive/debian-security/$snapshot"
  else
    main=${mirror:-$(host_mirror)}
    security=${SEEDER_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
  fi
  local sources=("deb $main $suite main" "deb $main $suite-updates main")
  if [ "${SEEDER_SECURITY:-auto}" = no ]; then
    say "WARNING: building without $suite-security (SEEDER_SECURITY=no)"
  elif (fetch_verified "$security" "$suite-security" armhf "" "") 2>/dev/null; then
    sources+=("deb $security $suite-security main")
  elif [ "${SEEDER_SECURITY:-auto}" = yes ]; then
    die "$security $suite-security cannot be used (index out of sync with its Release file?)"
  else
    say "WARNING: $security $suite-security is not usable now (its armhf index does not match"
    say "its signed Release file); building without it. SEEDER_SECURITY=yes makes this an error."
  fi
  local packages
  packages=$(root_packages | paste -sd, -)
  local recipe
  recipe="$(declare -f _mmdebstrap_root) $(cat "$(dirname "${BASH_SOURCE[0]}")"/initramfs/*) $packages ${sources[*]}"
  local list_key
  list_key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
  local state="" s
  if [ -z "$snapshot" ]; then
    for s in "${sources[@]}"; do
      local url suite_name
      read -r _ url suite_name _ <<<"$s"
      state+="$(suite_date "$url/dists/$suite_name");"
    done
  fi
  local dir="$cache/roots/$list_key"
  mkdir -p "$dir" "$cache/apt"
  local key
  key=$(printf '%s' "$state" | sha256sum | cut -c1-16)
  if [ -f "$dir/$key.tar" ]; then
    say "cached: the package list and the archive are unchanged"
    echo "$dir/$key.tar"
    return
  fi
  if [ -z "${state//;/}" ]; then
    local latest
    latest=$(newest "$dir"/*.tar)
    if [ -n "$latest" ]; then
      say "the archive cannot be reached: using the newest cached root for this package list"
      echo "$latest"
      return
    fi
  fi
  say "making a new root (the archive changed, or first build): this takes a while under qemu"
  _mmdebstrap_root "$suite" "$packages" "$cache/apt" "$dir/$key.tar.part" "${sources[@]}" >&2 ||
    die "mmdebstrap failed (its log is above)"
  mv "$dir/$key.tar.part" "$dir/$key.tar"
  # Keep the last two roots of this list: the previous one is the fallback when offline.
  local tars=() t
  for t in "$dir"/*.tar; do tars+=("$(stat -c '%Y %n' "$t")"); done
  printf '%s\n' "${tars[@]}" | sort -rn | tail -n +3 | cut -d' ' -f2- | xargs -r -d '\n' rm -f
  echo "$dir/$key.tar"
}

# The initramfs is made once, at the end (update-initramfs is diverted to a no-op while packages
# are installed: the kernel's postinst and initramfs-tools' trigger would each make it, and
# under qemu-user that is most of the build), with image/initramfs/ (what finding the root
# needs, not every network and display driver); the kernel's postinst has made the /boot links.
# shellcheck disable=SC2016 # the hooks' "$1" is the root, expanded by mmdebstrap
_mmdebstrap_root() {
  local suite=$1 packages=$2 apt_cache=$3 target=$4
  shift 4
  local initramfs
  initramfs="$(dirname "${BASH_SOURCE[0]}")/initramfs"
  mmdebstrap --mode=root --variant=minbase --architectures=armhf --format=tar \
    --include="$packages" \
    --aptopt='Acquire::Retries "5"' \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-include=/usr/share/doc/seeder/*' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $apt_cache /var/cache/apt/archives/" \
    --setup-hook='printf "do_symlinks = yes\nlink_in_boot = yes\n" > "$1"/etc/kernel-img.conf' \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.seeder-build --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\nexit 0\n" > "$1"/usr/sbin/update-initramfs && chmod 755 "$1"/usr/sbin/update-initramfs' \
    --customize-hook='rm "$1"/usr/sbin/update-initramfs' \
    --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
    --customize-hook="copy-in $initramfs/seeder.conf /etc/initramfs-tools/conf.d/" \
    --customize-hook="copy-in $initramfs/seeder-storage /etc/initramfs-tools/hooks/" \
    --customize-hook='chroot "$1" env -u TMPDIR update-initramfs -c -k all' \
    --customize-hook="sync-out /var/cache/apt/archives $apt_cache" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    "$suite" "$target" "$@"
}

# Run a command inside ROOT with a clean environment: the host's TMPDIR, locale and the like
# mean nothing in there.
in_root() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# Whether PATH is a plain folder (not a symlink): where the host writes into a root being
# built, a symlink could lead out of it into the host's own files.
plain_dir() {
  [ -d "$1" ] && [ ! -L "$1" ]
}

# Copy a tree into the running system's root, owned by root, without touching existing folders'
# metadata. Only ever run inside the root (see install_payload), where an absolute symlink
# means the root's own path.
_overlay() {
  local src=$1
  shift
  tar -C "$src" --owner=0 --group=0 --exclude=README.md "$@" -cf - . |
    tar -C / --no-overwrite-dir -xf -
}

# Everything that makes a Debian armhf root a seeder appliance: the package, the board's files,
# first boot, no passwords, SSH off. The one recipe for all three ways of making the image:
#   install_payload ROOT DEB SRC MODE
# SRC is a folder holding board/lime2/overlay and image/payload (this checkout); MODE debian
# (our partition layout) or armbian (Armbian's layout and fstab are kept). The files are staged
# in ROOT/tmp and the work is done inside the root (chroot, under qemu-user), never by the host
# on ROOT/… paths: a root from an image (Armbian's) may hold absolute symlinks, which the host
# would follow into its own files.
install_payload() {
  local root=$1 deb=$2 src=$3 mode=$4
  if ! plain_dir "$root" || ! plain_dir "$root/tmp"; then
    die "$(printf %q "$root")/tmp is not a plain folder: refusing to write into this root"
  fi
  local stage
  stage=$(mktemp -d "$root/tmp/seeder-payload.XXXXXX")
  mkdir -p "$stage/src/board/lime2" "$stage/src/image"
  cp -r "$src/board/lime2/overlay" "$stage/src/board/lime2/"
  cp -r "$src/image/payload" "$stage/src/image/"
  local here
  here=$(dirname "${BASH_SOURCE[0]}")
  cp "$here/lib.sh" "$here/packages.list" "$stage/src/image/"
  cp "$deb" "$stage/seeder.deb"
  # shellcheck disable=SC2016 # expanded by the shell inside the root
  in_root "$root" /bin/bash -c \
    'set -euo pipefail; . "$1/src/image/lib.sh"; strict_mode; install_payload_here "$1/seeder.deb" "$1/src" "$2"' \
    install-payload "${stage#"$root"}" "$mode" >&2
  rm -rf "$stage"
}

# install_payload's work, run inside the root being built (by install_payload, or by Armbian's
# framework in its chroot: customize-image.sh).
#   install_payload_here DEB SRC MODE
install_payload_here() {
  local deb=$1 src=$2 mode=$3
  # Nothing starts inside the build.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  dpkg -i "$deb" >&2
  rm -f /usr/sbin/policy-rc.d

  _overlay "$src/board/lime2/overlay"
  if [ "$mode" = armbian ]; then
    # Armbian's root is found by its own fstab and boot script; it has no FAT partition.
    _overlay "$src/image/payload" --exclude=./etc/fstab
  else
    _overlay "$src/image/payload"
    mkdir -p /boot/firmware
  fi

  # The kernel's device trees where boot.scr looks (and again after every kernel upgrade).
  local k
  for k in /usr/lib/linux-image-*; do
    [ -d "$k" ] || continue
    /etc/kernel/postinst.d/zz-seeder-dtbs "${k##*/linux-image-}" "" >&2
  done

  local units=(seeder.service seeder-board.service var-lib-seeder.mount
    seeder-first-boot.service seeder-ssh-keys.service seeder-setup-code.service seeder-ssh.path
    avahi-daemon.service)
  if [ "$mode" = debian ]; then
    units+=(systemd-networkd.service systemd-resolved.service systemd-timesyncd.service)
  fi
  systemctl --root=/ enable "${units[@]}" >&2
  # SSH stays off until the admin enables it; its host keys are made on first boot.
  systemctl --root=/ disable ssh.service >/dev/null 2>&1 || true
  systemctl --root=/ mask ssh.socket systemd-firstboot.service >&2
  rm -f /etc/ssh/ssh_host_*
  if [ "$mode" = debian ]; then
    ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
  else
    # Armbian's first-login prompt (root password, user) is replaced by the admin page.
    rm -f /root/.not_logged_in_yet
    rm -f /etc/profile.d/armbian-check-first-login.sh
  fi

  echo seeder > /etc/hostname
  # A new machine id on first boot (and systemd's first-boot units with it).
  : > /etc/machine-id
  rm -f /var/lib/dbus/machine-id
  # No account has a password: root is locked, the admin page is the way in.
  sed -i -E 's/^([^:]+):[^:!*][^:]*:/\1:!*:/; s/^root:[^:]*:/root:!*:/' /etc/shadow
  if awk -F: '$2 !~ /^[!*]/ { found = 1 } END { exit !found }' /etc/shadow; then
    die "an account in the image has a password"
  fi
  rm -rf /tmp/* /var/tmp/* /var/lib/apt/lists/* /var/cache/debconf/*-old
  find /var/log -type f -exec truncate -s 0 {} +
}

# The U-Boot script, compiled.
make_boot_scr() {
  local out=$1
  mkimage -A arm -O linux -T script -C none -n "Seeder boot" \
    -d "$(dirname "${BASH_SOURCE[0]}")/boot.cmd" "$out" >/dev/null
}

# Lay out the SD-card image: loader at 8 KiB, MBR, FAT (boot script, setup code), ext4 root.
assemble_image() {
  local root=$1 loader=$2 img=$3
  local used_mib root_mib total_mib
  used_mib=$(du -sm --apparent-size "$root" | cut -f1)
  # Room for the first boot, logs and a kernel upgrade; the root grows to the card on boot.
  root_mib=$(( (used_mib * 13 / 10 + 256 + 3) / 4 * 4 ))
  total_mib=$(( ROOT_START_MIB + root_mib ))
  say "root $used_mib MiB used, partition $root_mib MiB, image $total_mib MiB"

  local boot="$img.boot" rootfs="$img.root"
  rm -f "$boot" "$rootfs" "$img"
  truncate -s "${BOOT_SIZE_MIB}M" "$boot"
  mkfs.vfat -n "$BOOT_LABEL" "$boot" >/dev/null
  make_boot_scr "$img.scr"
  mcopy -i "$boot" "$img.scr" ::boot.scr
  mcopy -i "$boot" "$(dirname "${BASH_SOURCE[0]}")/boot.cmd" ::boot.cmd
  printf '%s\r\n' \
    "This is the Seeder boot partition: the boot script, and the setup code once the" \
    "seeder has started (SEEDER-SETUP.TXT). The seeder's data lives on its SATA disk." \
    > "$img.readme"
  mcopy -i "$boot" "$img.readme" ::README.TXT
  rm -f "$img.scr" "$img.readme"

  truncate -s "${root_mib}M" "$rootfs"
  mkfs.ext4 -q -L "$ROOT_LABEL" -m 2 -d "$root" "$rootfs"

  truncate -s "${total_mib}M" "$img"
  sfdisk --quiet "$img" <<EOF
label: dos
label-id: 0x$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
start=${BOOT_START_MIB}MiB, size=${BOOT_SIZE_MIB}MiB, type=c, bootable
start=${ROOT_START_MIB}MiB, type=83
EOF
  dd if="$loader" of="$img" bs=1K seek="$LOADER_OFFSET_KIB" conv=notrunc status=none
  dd if="$boot" of="$img" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
  dd if="$rootfs" of="$img" bs=1M seek="$ROOT_START_MIB" conv=notrunc,sparse status=none
  rm -f "$boot" "$rootfs"
}

write_manifest() {
  local root=$1 deb=$2 base=$3 repo=$4
  echo "image: seeder-lime2"
  echo "seeder: $(dpkg-deb -f "$deb" Version)"
  echo "base: $base"
  echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "loader: u-boot-sunxi A20-OLinuXino-Lime2 at ${LOADER_OFFSET_KIB} KiB"
  local k kernels=()
  for k in "$root"/usr/lib/linux-image-*; do [ -e "$k" ] && kernels+=("${k##*/linux-image-}"); done
  echo "kernel: ${kernels[*]}"
  echo "packages:"
  dpkg-query --admindir="$root/var/lib/dpkg" -W -f='  ${Package} ${Version}\n'
}

# Compare a device with an image where the image has data (the block map's ranges; the rest
# of a card is whatever it held before). Exit status 0 when they agree.
#   compare_mapped IMAGE[.xz] BMAP DEVICE [SKIP_FROM_MIB SKIP_TO_MIB]
compare_mapped() {
  python3 - "$@" <<'PY'
import lzma, sys, xml.etree.ElementTree as ET
image, bmap, device = sys.argv[1:4]
skip = (int(sys.argv[4]) << 20, int(sys.argv[5]) << 20) if len(sys.argv) > 5 else (0, 0)
root = ET.parse(bmap).getroot()
bs = int(root.findtext("BlockSize"))
ranges = []
for r in root.iter("Range"):
    a, _, b = r.text.strip().partition("-")
    ranges.append((int(a) * bs, (int(b or a) + 1) * bs))
src = lzma.open(image) if image.endswith(".xz") else open(image, "rb")
pos = 0
chunk = 1 << 20
with open(device, "rb") as dev:
    for start, end in ranges:
        while pos < start:
            n = len(src.read(min(chunk, start - pos)))
            if n == 0:
                sys.exit("the image ends before its block map")
            pos += n
        dev.seek(start)
        while pos < end:
            want = src.read(min(chunk, end - pos))
            got = dev.read(len(want))
            lo, hi = pos, pos + len(want)
            if want != got and not (skip[0] <= lo and hi <= skip[1]):
                sys.exit(f"differs in bytes {lo}..{hi}")
            pos = hi
PY
}

# Run apt inside an armhf root (under qemu-user) to add packages it lacks, with /proc, /dev
# and /sys mounted in it for the time. Every step is checked here (callers use `|| die`, which
# turns errexit off inside), and nothing may stay mounted afterwards.
_chroot_apt_install() {
  local root=$1
  shift
  local p
  for p in "$root" "$root/etc" "$root/proc" "$root/dev" "$root/sys"; do
    plain_dir "$p" || { say "$(printf %q "$p") is not a plain folder in the root"; return 1; }
  done
  mount_tracked -t proc proc "$root/proc" || return 1
  mount_tracked --bind /dev "$root/dev" || return 1
  mount_tracked -t sysfs sys "$root/sys" || return 1
  local rc=0
  # The host's resolver, for apt; the root's own resolv.conf is put back after. Done inside
  # the root: its /etc/resolv.conf may be a symlink meant for the booted system.
  in_root "$root" /bin/sh -c \
    'if [ -e /etc/resolv.conf ] || [ -L /etc/resolv.conf ]; then mv /etc/resolv.conf /etc/resolv.conf.seeder-build; fi; cat > /etc/resolv.conf' \
    < /etc/resolv.conf || rc=$?
  if [ "$rc" = 0 ]; then
    {
      in_root "$root" apt-get update -qq &&
        in_root "$root" apt-get install -y -qq --no-install-recommends "$@"
    } >&2 || rc=$?
  fi
  in_root "$root" /bin/sh -c \
    'rm -f /etc/resolv.conf; if [ -e /etc/resolv.conf.seeder-build ] || [ -L /etc/resolv.conf.seeder-build ]; then mv /etc/resolv.conf.seeder-build /etc/resolv.conf; fi' ||
    rc=1
  for p in sys dev proc; do
    umount "$root/$p" || umount -l "$root/$p" || rc=1
  done
  if has_mounts_under "$root"; then
    say "still mounted in the root: $(mounts_under "$root" | tr '\0' ' ')"
    return 1
  fi
  return "$rc"
}

# Remaster an Armbian Lime2 image: verify it, unpack its root partition, install the same
# payload as our own image, repack it (same UUID and label, so Armbian's boot script and fstab
# still find it) and write it with Armbian's loader and partition start kept.
#   remaster_armbian FROM SHA256 DEB SRC WORK OUT_IMG   (leaves the root folder in WORK/root)
remaster_armbian() {
  local from=$1 sha=$2 deb=$3 src=$4 work=$5 img=$6
  [ -f "$from" ] || die "no such file: $from"
  local actual
  actual=$(sha256sum < "$from" | cut -d' ' -f1)
  [ "$actual" = "${sha,,}" ] || die "$from does not match the given SHA-256 (it is $actual): download it again"
  say "SHA-256 matches"

  step "unpack the Armbian image"
  case "$from" in
    *.xz) xz -dc "$from" > "$img" ;;
    *) cp --sparse=always "$from" "$img" ;;
  esac
  local table start size
  table=$(sfdisk --json "$img") || die "$from has no partition table"
  # Armbian's root is its last Linux partition (4 MiB in, on current images).
  read -r start size < <(python3 -c '
import json, sys
parts = [p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p["type"] in ("83", "L")]
if not parts: sys.exit("no Linux partition")
print(parts[-1]["start"], parts[-1]["size"])' <<<"$table") || die "$from has no Linux partition"
  local num
  num=$(python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
print([i + 1 for i, p in enumerate(parts) if p["type"] in ("83", "L")][-1])' <<<"$table")
  dd if="$img" of="$work/armbian-root" bs=512 skip="$start" count="$size" status=none
  local uuid label fstype
  fstype=$(blkid -p -o value -s TYPE "$work/armbian-root" || true)
  [ "$fstype" = ext4 ] || die "the image's last Linux partition is not an ext4 root (${fstype:-no file system}): is it an Armbian image?"
  uuid=$(blkid -p -o value -s UUID "$work/armbian-root")
  label=$(blkid -p -o value -s LABEL "$work/armbian-root" || true)
  local root="$work/root" mnt="$work/mnt"
  mkdir -p "$root" "$mnt"
  mount_tracked -o loop,ro "$work/armbian-root" "$mnt"
  tar -C "$mnt" --xattrs --xattrs-include='*' --numeric-owner -cf - . | tar -C "$root" --xattrs --xattrs-include='*' --numeric-owner -xpf -
  umount "$mnt"
  rm -f "$work/armbian-root"
  [ -f "$root/boot/armbianEnv.txt" ] || die "no /boot/armbianEnv.txt: is this an Armbian image?"

  step "install the seeder package and the payload"
  local missing=() p
  for p in $(payload_packages); do
    [ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] ||
      missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "adding ${missing[*]}"
    _chroot_apt_install "$root" "${missing[@]}" || die "cannot install ${missing[*]} in the Armbian root"
  fi
  install_payload "$root" "$deb" "$src" armbian

  step "repack the root"
  local used_mib root_mib
  used_mib=$(du -sm --apparent-size "$root" | cut -f1)
  root_mib=$(( (used_mib * 13 / 10 + 256 + 3) / 4 * 4 ))
  local old_mib=$(( size / 2048 ))
  [ "$root_mib" -ge "$old_mib" ] || root_mib=$old_mib
  truncate -s "${root_mib}M" "$work/new-root"
  mkfs.ext4 -q -U "$uuid" ${label:+-L "$label"} -m 2 -d "$root" "$work/new-root"
  # Drop the old root's bytes first: the sparse copy below skips the new root's zero blocks,
  # which must read as zeros, not as whatever the old root held there (a corrupt file system).
  truncate -s $(( start * 512 )) "$img"
  truncate -s $(( start * 512 + root_mib * 1048576 )) "$img"
  echo "start=$start, size=$(( root_mib * 2048 ))" | sfdisk --quiet -N "$num" "$img"
  dd if="$work/new-root" of="$img" bs=512 seek="$start" conv=notrunc,sparse status=none
  rm -f "$work/new-root"
}
