//! Choosing the burn backend at run time: `flex` (default, pure-Rust CPU), `ndarray`
//! (feature `ndarray`) or `wgpu` (feature `wgpu`; a GPU, or a CPU Vulkan such as lavapipe).

use burn::tensor::Device;

/// A backend name that cannot be used in this build or on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the known names.
    #[error("unknown device {0:?} (allowed: flex, ndarray, wgpu)")]
    Unknown(String),
    /// Known, but this binary was built without its cargo feature.
    #[error("device {name:?} needs the cargo feature `{name}`: rebuild with `--features {name}`")]
    NotCompiled {
        /// The device name.
        name: String,
    },
    /// wgpu found no adapter (no GPU and no Vulkan driver such as Debian's mesa-vulkan-drivers).
    #[error("device \"wgpu\": no graphics adapter found (install a GPU driver, or a CPU Vulkan driver such as Debian's `mesa-vulkan-drivers`)")]
    NoAdapter,
}

/// The names accepted by [`device_from_name`].
pub const DEVICE_NAMES: [&str; 3] = ["flex", "ndarray", "wgpu"];

/// The device for `name`, checked to be usable. The returned device has no autodiff; the
/// training loop enables it.
pub fn device_from_name(name: &str) -> Result<Device, DeviceError> {
    match name {
        "flex" => Ok(Device::flex()),
        "ndarray" => ndarray_device(),
        "wgpu" => wgpu_device(),
        other => Err(DeviceError::Unknown(other.to_string())),
    }
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // burn 0.22 deprecates ndarray in favour of flex; kept for comparisons.
fn ndarray_device() -> Result<Device, DeviceError> {
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray"))]
fn ndarray_device() -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { name: "ndarray".into() })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, DeviceError> {
    use burn::tensor::DeviceType;
    // Without any adapter, wgpu panics at the first operation: probe first.
    let found = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Wgpu).len()).unwrap_or(0);
    if found == 0 {
        return Err(DeviceError::NoAdapter);
    }
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { name: "wgpu".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_rejected_with_the_allowed_list() {
        let e = device_from_name("tpu").unwrap_err();
        assert!(e.to_string().contains("allowed: flex, ndarray, wgpu"));
    }

    #[test]
    fn flex_is_always_available() {
        assert!(device_from_name("flex").is_ok());
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_without_the_feature_says_how_to_enable_it() {
        assert!(device_from_name("wgpu").unwrap_err().to_string().contains("--features wgpu"));
    }
}
