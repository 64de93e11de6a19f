//! Arbitrary bytes decoded as every kura-scaleway response type, as an error
//! envelope and as a query string never panic.
#![no_main]

use kura_scaleway::{
    BaremetalServer, Error, Ip, LocalImage, Offer, OfferOption, Os, PrivateNetwork, PrivateNic,
    Server, ServerPrivateNetwork, Task,
};
use libfuzzer_sys::fuzz_target;

fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) {
    let _ = serde_json::from_slice::<T>(data);
    let _ = serde_json::from_slice::<Vec<T>>(data);
}

fuzz_target!(|data: &[u8]| {
    decode::<Server>(data);
    decode::<PrivateNic>(data);
    decode::<Task>(data);
    decode::<Ip>(data);
    decode::<PrivateNetwork>(data);
    decode::<LocalImage>(data);
    decode::<Offer>(data);
    decode::<OfferOption>(data);
    decode::<Os>(data);
    decode::<BaremetalServer>(data);
    decode::<ServerPrivateNetwork>(data);
    for status in [400u16, 401, 403, 404, 409, 412, 429, 500, 503] {
        let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
        let e = Error::from_response(status, &http::HeaderMap::new(), data);
        let _ = (e.is_not_found(), e.is_retryable(), e.to_string());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = kura_scaleway::request::parse_query(s);
        let _ = kura_scaleway::Zone::new(s).map(|z| z.region());
    }
});
