//! The field names of the Go structs dockerd decodes request bodies into
//! (moby's `api/types`), one list per object level. [`super::obj::object`]
//! refuses any key that Go would match to one of them without exact
//! spelling, so a list missing a field would let that field through
//! unread: keep them as complete as moby's structs.

/// `container.Config`: promoted to the top level of a create body.
#[rustfmt::skip]
pub(super) const CONFIG_FIELDS: &[&str] = &[
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
    "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
    "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
    "StopTimeout", "Shell",
];

/// `ContainerConfigWrapper`'s own fields.
pub(super) const WRAPPER_FIELDS: &[&str] = &["HostConfig", "NetworkingConfig", "Cpuset"];

/// `container.HostConfig` without its embedded `Resources`.
#[rustfmt::skip]
pub(super) const HOSTCONFIG_FIELDS: &[&str] = &[
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy",
    "AutoRemove", "VolumeDriver", "VolumesFrom", "ConsoleSize", "Annotations", "CapAdd", "CapDrop",
    "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup",
    "Links", "OomScoreAdj", "PidMode", "Privileged", "PublishAllPorts", "ReadonlyRootfs",
    "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode", "UsernsMode", "ShmSize", "Sysctls", "Runtime",
    "Isolation", "Mounts", "MaskedPaths", "ReadonlyPaths", "Init",
];

/// `container.Resources`, embedded in HostConfig and UpdateConfig.
#[rustfmt::skip]
pub(super) const RESOURCES_FIELDS: &[&str] = &[
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
    "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits",
    "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth",
];

pub(super) const UPDATE_FIELDS: &[&str] = &["RestartPolicy"];

#[rustfmt::skip]
pub(super) const EXEC_FIELDS: &[&str] = &[
    "User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout",
    "Detach", "DetachKeys", "Env", "WorkingDir", "Cmd",
];

#[rustfmt::skip]
pub(super) const MOUNT_FIELDS: &[&str] = &[
    "Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions", "VolumeOptions",
    "ImageOptions", "TmpfsOptions", "ClusterOptions",
];

pub(super) const VOLUME_OPTIONS_FIELDS: &[&str] = &["NoCopy", "Labels", "Subpath", "DriverConfig"];

pub(super) const DRIVER_FIELDS: &[&str] = &["Name", "Options"];

pub(super) const TMPFS_OPTIONS_FIELDS: &[&str] = &["SizeBytes", "Mode", "Options"];

pub(super) const NETWORKING_FIELDS: &[&str] = &["EndpointsConfig"];

#[rustfmt::skip]
pub(super) const VOLUME_CREATE_FIELDS: &[&str] = &[
    "Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec",
];

#[rustfmt::skip]
pub(super) const NETWORK_CREATE_FIELDS: &[&str] = &[
    "Name", "CheckDuplicate", "Driver", "Scope", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
    "Attachable", "Ingress", "ConfigOnly", "ConfigFrom", "Options", "Labels",
];
