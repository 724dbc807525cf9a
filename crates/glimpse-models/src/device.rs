//! Choosing where tensors live: Burn's CPU backend (`flex`) or wgpu (Vulkan, Metal, DX12; WebGPU in
//! the browser, set up by `glimpse-wasm`).
//!
//! wgpu silently falls back to OpenGL when no Vulkan driver is installed, and a machine without a
//! GPU may still offer a software adapter (lavapipe, SwiftShader) that is slower than the CPU
//! backend. [`DeviceInfo`] says which API and adapter were really obtained so callers can report it.

use std::fmt;
use std::str::FromStr;
#[cfg(not(target_family = "wasm"))]
use std::sync::OnceLock;

use burn::prelude::*;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// wgpu on a hardware adapter when there is one, otherwise the CPU backend.
    #[default]
    Auto,
    Cpu,
    Wgpu,
}

impl DeviceChoice {
    /// Every choice.
    pub const ALL: [Self; 3] = [Self::Auto, Self::Cpu, Self::Wgpu];

    /// The name a user types (`--device NAME`), as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|choice| choice.name() == name)
            .ok_or_else(|| format!("unknown device `{name}`: use {}", Self::ALL.map(Self::name).join(", ")))
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// No wgpu adapter could be set up; says what wgpu reported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no wgpu adapter: {0}")]
pub struct NoAdapter(pub String);

/// What was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceInfo {
    Cpu,
    Wgpu {
        /// `Vulkan`, `Metal`, `Dx12`, `Gl` or `BrowserWebGpu`.
        api: String,
        adapter: String,
        /// A CPU rasteriser such as lavapipe or SwiftShader.
        software: bool,
    },
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu (Burn flex backend)"),
            Self::Wgpu { api, adapter, software } => {
                let kind = if *software { ", software adapter" } else { "" };
                write!(f, "wgpu ({api}, {adapter}{kind})")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub info: DeviceInfo,
    /// Why `Auto` chose what it chose, for the user.
    pub reason: Option<String>,
}

pub fn cpu() -> SelectedDevice {
    SelectedDevice { device: Device::flex(), info: DeviceInfo::Cpu, reason: None }
}

/// The default wgpu adapter, set up once per process (wgpu's runtime cannot be set up twice).
#[cfg(not(target_family = "wasm"))]
pub fn wgpu() -> Result<SelectedDevice, NoAdapter> {
    static WGPU: OnceLock<Result<(Device, DeviceInfo), NoAdapter>> = OnceLock::new();
    let (device, info) = WGPU
        .get_or_init(|| {
            let (device, setup) = Device::wgpu_options()
                .graphics_api(native_api())
                .init_with_setup()
                .map_err(|e| NoAdapter(e.to_string()))?;
            let adapter = setup.adapter.get_info();
            let info = DeviceInfo::Wgpu {
                api: format!("{:?}", setup.backend),
                adapter: adapter.name.clone(),
                software: adapter.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
            };
            Ok((device, info))
        })
        .clone()?;
    Ok(SelectedDevice { device, info, reason: None })
}

/// The platform's own GPU API. Pinned rather than automatic: wgpu's automatic choice falls back to
/// OpenGL without a word (and probes EGL noisily on Linux), where glimpse would rather use the CPU.
#[cfg(not(target_family = "wasm"))]
fn native_api() -> burn::tensor::wgpu::WgpuBackend {
    use burn::tensor::wgpu::WgpuBackend;
    if cfg!(target_vendor = "apple") {
        WgpuBackend::Metal
    } else if cfg!(windows) {
        WgpuBackend::Dx12
    } else {
        WgpuBackend::Vulkan
    }
}

/// Resolves the user's choice. `Auto` prefers a hardware wgpu adapter and otherwise falls back
/// to the CPU backend, which is faster than any software rasteriser.
#[cfg(not(target_family = "wasm"))]
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice, NoAdapter> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => wgpu(),
        DeviceChoice::Auto => Ok(match wgpu() {
            Ok(selected) if !matches!(selected.info, DeviceInfo::Wgpu { software: true, .. }) => selected,
            Ok(selected) => SelectedDevice {
                reason: Some(format!("{} is a software adapter; the CPU backend is faster", selected.info)),
                ..cpu()
            },
            Err(e) => SelectedDevice { reason: Some(e.to_string()), ..cpu() },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_parses_back_from_its_name_and_others_are_refused() {
        for choice in DeviceChoice::ALL {
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
        let err = "gpu".parse::<DeviceChoice>().unwrap_err();
        assert_eq!(err, "unknown device `gpu`: use auto, cpu, wgpu");
    }
}
