//! Choosing the burn backend at run time: `flex` (default, pure-Rust CPU), `ndarray`
//! (feature `ndarray`), `wgpu` (feature `wgpu`; a GPU, or a CPU Vulkan such as lavapipe) or
//! `cuda` (feature `cuda`; an NVIDIA GPU, its driver loaded at run time).

use burn::tensor::Device;

/// A backend name that cannot be used in this build or on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the known names.
    #[error("unknown device {0:?} (allowed: flex, ndarray, wgpu, cuda)")]
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
    /// CUDA found no GPU (no NVIDIA driver, or no device).
    #[error("device \"cuda\": no CUDA device found (an NVIDIA GPU and its driver are needed; use --device flex on a CPU)")]
    NoCudaDevice,
}

/// The names accepted by [`device_from_name`].
pub const DEVICE_NAMES: [&str; 4] = ["flex", "ndarray", "wgpu", "cuda"];

/// The device for `name`, checked to be usable. The returned device has no autodiff; the
/// training loop enables it.
pub fn device_from_name(name: &str) -> Result<Device, DeviceError> {
    match name {
        "flex" => Ok(Device::flex()),
        "ndarray" => ndarray_device(),
        "wgpu" => wgpu_device(),
        "cuda" => cuda_device(),
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

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device, DeviceError> {
    use burn::tensor::DeviceType;
    // Without a driver or a device, the first operation would fail deep inside: probe first.
    let found = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Cuda).len()).unwrap_or(0);
    if found == 0 {
        return Err(DeviceError::NoCudaDevice);
    }
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { name: "cuda".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_rejected_with_the_allowed_list() {
        let e = device_from_name("tpu").unwrap_err();
        assert!(e.to_string().contains("allowed: flex, ndarray, wgpu, cuda"));
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

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_enable_it() {
        assert!(device_from_name("cuda").unwrap_err().to_string().contains("--features cuda"));
    }

    /// With the feature on a machine without an NVIDIA GPU, the error says so (no panic).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        use burn::tensor::DeviceType;
        if std::panic::catch_unwind(|| Device::enumerate(DeviceType::Cuda).len()).unwrap_or(0) == 0 {
            assert_eq!(device_from_name("cuda").unwrap_err(), DeviceError::NoCudaDevice);
        } else {
            eprintln!("a CUDA device is present: the no-GPU error is not exercised");
        }
    }
}
