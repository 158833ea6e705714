//! LIST: selectors, `limit`/`continue` paging over a consistent
//! resourceVersion, and the list answer as objects, a Table or
//! PartialObjectMetadata.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::http::{Presentation, ResourceCall, json_response};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{Presented, State};
use crate::table;
use crate::watch::partial_metadata;

/// One list page, borrowed from the store: serialize it (see [`Presented`]) while the state
/// lock is held instead of copying every object out.
#[derive(Debug)]
pub struct ListPage<'a> {
    /// Matching objects, as stored.
    pub items: Vec<&'a Value>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
    /// How many further items match.
    pub remaining: Option<usize>,
}

/// Which objects a list wants, and how many.
#[derive(Debug, Default)]
pub struct ListQuery<'a> {
    /// Namespace, `None` for all.
    pub namespace: Option<&'a str>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`, over the stored form.
    pub fields: FieldSelector,
    /// `limit` (0 or absent: everything).
    pub limit: Option<usize>,
    /// `continue` token of the previous page.
    pub continue_token: Option<&'a str>,
}

impl State {
    /// List with selectors and `limit`/`continue` paging.
    pub fn list<'a>(&'a self, rt: &ResourceType, q: &ListQuery<'a>) -> ApiResult<ListPage<'a>> {
        let (list_rv, start_after, left_before) = match q.continue_token {
            Some(t) => decode_continue(t, self.store.compacted_rv())?,
            None => (self.store.current_rv(), None, None),
        };
        let unfiltered = q.labels.is_empty() && q.fields.is_empty();
        let mut stored =
            self.store
                .list_after(&rt.group_resource(), q.namespace, start_after.as_ref());
        let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        // The filter stops at the page's last match, so `stored` resumes right after it.
        let page: Vec<_> = stored
            .by_ref()
            .filter(|(_, o)| unfiltered || (q.labels.matches(o) && q.fields.matches(o)))
            .take(limit)
            .collect();
        // As the API server does, a page cut at its limit continues whenever any object follows
        // it, matched or not (the next page may be empty), and the count of what is left is given
        // only for a list without selectors: neither tests the selectors beyond the page. The
        // first page counts what follows it; the count travels in the continue token and each
        // later page takes its own length off, as the API server answers for the snapshot the
        // list started from. Counting again on every page walked the objects after it: N²/2P
        // steps for N objects in pages of P (a quarter of the emulator's CPU serving 100,000).
        let more = stored.next().is_some();
        let left = match (more, left_before) {
            (false, _) => 0,
            (true, _) if !unfiltered => 1,
            (true, Some(before)) => before.saturating_sub(page.len()).max(1),
            (true, None) => 1 + stored.count(),
        };
        let items = page.iter().map(|(_, o)| *o).collect();
        let (continue_token, remaining) = match page.last() {
            Some(((ns, name), _)) if more => (
                Some(encode_continue(list_rv, ns, name, left)),
                Some(left).filter(|_| unfiltered),
            ),
            _ => (None, None),
        };
        Ok(ListPage {
            items,
            resource_version: list_rv,
            continue_token,
            remaining,
        })
    }
}

fn encode_continue(rv: u64, ns: &str, name: &str, left: usize) -> String {
    let raw = json!({"rv": rv, "start": [ns, name], "left": left}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The list's resourceVersion, the last key served and how many objects followed it.
type Continue = (u64, Option<(String, String)>, Option<usize>);

fn decode_continue(token: &str, compacted: u64) -> ApiResult<Continue> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    if rv < compacted {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ));
    }
    let ns = v["start"][0].as_str().ok_or_else(bad)?.to_string();
    let name = v["start"][1].as_str().ok_or_else(bad)?.to_string();
    let left = v["left"].as_u64().and_then(|l| usize::try_from(l).ok());
    Ok((rv, Some((ns, name)), left))
}

/// A list answer; `items` is serialized as it is, so a page can borrow from the store.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBody<T> {
    kind: String,
    api_version: String,
    metadata: ListMeta,
    items: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_item_count: Option<usize>,
}

impl<T: Serialize> ListBody<T> {
    /// `KindList` of `rt` at a resourceVersion, with paging.
    pub fn new(
        rt: &ResourceType,
        items: T,
        rv: u64,
        continue_token: Option<String>,
        remaining: Option<usize>,
    ) -> Self {
        ListBody {
            kind: format!("{}List", rt.kind),
            api_version: rt.api_version(),
            metadata: ListMeta {
                resource_version: rv.to_string(),
                continue_token,
                remaining_item_count: remaining,
            },
            items,
        }
    }
}

/// Answer a LIST.
pub fn serve(call: &ResourceCall<'_>) -> ApiResult<Response> {
    let labels = call.labels()?;
    let fields = call.fields()?;
    let limit = match call.param("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    let query = ListQuery {
        namespace: call.namespace_filter(),
        labels,
        fields,
        limit,
        continue_token: call.param("continue").filter(|c| !c.is_empty()),
    };
    // The page borrows from the store: it is serialized before the lock is released.
    let st = call.server.state();
    let page = st.list(&call.rt, &query)?;
    let rt = &call.rt;
    let response = match call.presentation() {
        Presentation::Table(include) => {
            let table = table::render(
                rt,
                &page.items,
                page.resource_version,
                page.continue_token.as_deref(),
                include,
            );
            json_response(StatusCode::OK, &table, &[])
        }
        Presentation::Metadata => {
            let items: Vec<_> = page.items.iter().map(|o| partial_metadata(o)).collect();
            let mut body = ListBody::new(
                rt,
                items,
                page.resource_version,
                page.continue_token,
                page.remaining,
            );
            body.kind = "PartialObjectMetadataList".into();
            body.api_version = "meta.k8s.io/v1".into();
            json_response(StatusCode::OK, &body, &[])
        }
        Presentation::Object => {
            let items: Vec<_> = page.items.iter().map(|o| Presented(rt, o)).collect();
            let body = ListBody::new(
                rt,
                items,
                page.resource_version,
                page.continue_token,
                page.remaining,
            );
            json_response(StatusCode::OK, &body, &[])
        }
    };
    Ok(response)
}
