//! HTTP request and response heads: no panic, bounded consumption, and a parsed request
//! always re-encodes to a head that parses as origin-form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::http;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, n))) = http::parse_request(data) {
        assert!(n <= data.len());
        let _ = head.body_length();
        let _ = head.wants_close();
        let _ = head.proxy_credentials();
        let upstream = head.encode_upstream("zcproxy");
        if !head.is_connect() {
            let mut headers = [httparse::EMPTY_HEADER; 256];
            let mut req = httparse::Request::new(&mut headers);
            assert!(matches!(req.parse(&upstream), Ok(httparse::Status::Complete(_))));
        }
    }
    if let Ok(Some((resp, n))) = http::parse_response(data) {
        assert!(n <= data.len());
        let _ = resp.body_length("GET");
        let _ = resp.encode_downstream("zcproxy", true);
    }
});
