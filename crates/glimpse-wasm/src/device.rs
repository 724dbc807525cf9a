//! The two devices of the browser build: WebGPU through wgpu, or Burn's CPU backend. The threaded
//! engine (built with `atomics`, for cross-origin isolated pages) has the CPU backend alone:
//! cubecl-wgpu does not build there.

#[cfg(not(target_feature = "atomics"))]
use std::cell::RefCell;

use burn::prelude::*;
#[cfg(not(target_feature = "atomics"))]
use burn::tensor::wgpu::WgpuBackend;
use glimpse_models::device::cpu;
use serde::Serialize;
use wasm_bindgen::JsValue;

#[cfg(not(target_feature = "atomics"))]
use crate::errors::NO_ADAPTER;
use crate::errors::js_error;

/// What the page is told about the device in use.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    /// `webgpu` or `cpu`.
    pub kind: &'static str,
    pub description: String,
    /// The largest storage buffer one shader may bind, in bytes (WebGPU only). cubecl requests
    /// the adapter's own limits rather than WebGPU's 128 MiB default, and tables larger than the
    /// default (GPT-2's 154 MB embedding) are split into blocks below it anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_storage_binding: Option<u64>,
}

#[cfg(not(target_feature = "atomics"))]
thread_local! {
    /// wgpu's runtime can be set up once per page; later sessions reuse it.
    static WEBGPU: RefCell<Option<(Device, DeviceReport)>> = const { RefCell::new(None) };
}

/// `webgpu` or `cpu`; the JavaScript side resolves `auto` and checks `navigator.gpu` first.
pub async fn select(kind: &str) -> Result<(Device, DeviceReport), JsValue> {
    match kind {
        "cpu" => {
            let selected = cpu();
            let report =
                DeviceReport { kind: "cpu", description: selected.info.to_string(), max_storage_binding: None };
            Ok((selected.device, report))
        }
        #[cfg(not(target_feature = "atomics"))]
        "webgpu" => {
            let (device, report) = match WEBGPU.with_borrow(Clone::clone) {
                Some(cached) => cached,
                None => {
                    let cached = init_webgpu().await?;
                    WEBGPU.set(Some(cached.clone()));
                    cached
                }
            };
            Ok((device, report))
        }
        #[cfg(target_feature = "atomics")]
        "webgpu" => Err(js_error(
            crate::errors::ENGINE,
            "the threaded engine has the CPU backend alone: WebGPU is the other engine's",
        )),
        other => Err(js_error(crate::errors::INPUT, format!("unknown device `{other}`: use `webgpu` or `cpu`"))),
    }
}

#[cfg(not(target_feature = "atomics"))]
async fn init_webgpu() -> Result<(Device, DeviceReport), JsValue> {
    let (device, setup) = Device::wgpu_options()
        .graphics_api(WgpuBackend::WebGpu)
        .init_with_setup_async()
        .await
        .map_err(|e| js_error(NO_ADAPTER, format!("WebGPU could not be set up: {e}")))?;
    let adapter = setup.adapter.get_info();
    let name = if adapter.name.is_empty() { "browser adapter".to_string() } else { adapter.name };
    let report = DeviceReport {
        kind: "webgpu",
        description: format!("WebGPU ({name})"),
        max_storage_binding: Some(setup.device.limits().max_storage_buffer_binding_size),
    };
    Ok((device, report))
}
