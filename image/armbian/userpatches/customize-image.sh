#!/bin/bash
# Armbian build framework hook (userpatches/customize-image.sh): runs inside the new image's
# chroot near the end of the build, with userpatches/overlay mounted at /tmp/overlay.
# Installs the same payload as image/build: the seeder package, the board's files, first boot,
# no passwords, SSH off, Armbian's first-login prompt replaced by the admin page's claim.
# Fill the overlay first with image/armbian/prepare-userpatches.
#
# Arguments from the framework: RELEASE LINUXFAMILY BOARD BUILD_DESKTOP ARCH
set -euo pipefail

board=${3:-lime2}
src=/tmp/overlay/seeder
if [ ! -f "$src/image/lib.sh" ]; then
  echo "userpatches/overlay/seeder is empty: run image/armbian/prepare-userpatches first" >&2
  exit 1
fi
if [ "$board" != lime2 ]; then
  echo "the seeder payload is made for the Lime2, not $board" >&2
  exit 1
fi
# shellcheck source=image/lib.sh
. "$src/image/lib.sh"
strict_mode

# Packages of image/packages.list that Armbian's minimal image lacks (its kernel is its own).
missing=()
for p in $(payload_packages); do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
deb=$(newest "$src"/seeder_*_armhf.deb)
[ -n "$deb" ] || { echo "no seeder package in $src: run image/armbian/prepare-userpatches first" >&2; exit 1; }
install_payload_here "$deb" "$src" armbian
