//! The gNOI StartContainerRequest translation on arbitrary protobuf: the request is decoded as
//! the server decodes it and turned into container settings exactly as the server does.
//! Nothing may panic; settings it hands out must pass their own checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tpcm::containerz::proto::StartContainerRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = StartContainerRequest::decode(data) else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let store = tpcm::manager::store::Store::new(root.path());
    if let Ok(settings) = tpcm::containerz::start_request_settings(&store, &request) {
        assert!(settings.check().is_ok(), "translated settings fail their own check: {request:?}");
    }
});
