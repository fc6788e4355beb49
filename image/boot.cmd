# Seeder boot script (compiled to boot.scr by image/build with mkimage). U-Boot finds it on the
# first, bootable partition of the SD card; the kernel, initramfs and device trees are read from
# the root partition, so a kernel upgrade on the device needs nothing from here.
#
# On the Lime2, U-Boot names the device tree of the board in fdtfile; where there is none (the
# virt machine of QEMU) the device tree of the firmware itself (fdtcontroladdr) is used, so one
# image boots both. Keep this file ASCII without quote marks in comments: U-Boot parses it.
setenv rootpart 2
part uuid ${devtype} ${devnum}:${rootpart} rootuuid
setenv bootargs "root=PARTUUID=${rootuuid} ro rootwait panic=10"

echo "Seeder: loading the kernel from ${devtype} ${devnum}:${rootpart}"
load ${devtype} ${devnum}:${rootpart} ${kernel_addr_r} /boot/vmlinuz
load ${devtype} ${devnum}:${rootpart} ${ramdisk_addr_r} /boot/initrd.img
setenv initrd_size ${filesize}

if test -n "${fdtfile}" && load ${devtype} ${devnum}:${rootpart} ${fdt_addr_r} /boot/dtbs/${fdtfile}; then
    echo "Seeder: device tree ${fdtfile}"
    setenv bootargs "${bootargs} console=ttyS0,115200"
    bootz ${kernel_addr_r} ${ramdisk_addr_r}:${initrd_size} ${fdt_addr_r}
else
    echo "Seeder: no board device tree, using the one of the firmware"
    setenv bootargs "${bootargs} console=ttyAMA0,115200"
    bootz ${kernel_addr_r} ${ramdisk_addr_r}:${initrd_size} ${fdtcontroladdr}
fi
echo "Seeder: the kernel did not start"
