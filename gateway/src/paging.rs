//! Paged lists. Every list answers a JSON array of at most `limit` items (100 unless the
//! request says otherwise, at most 1,000), with the total that matches its filters in
//! `X-Total-Count` and, when there is more, the next page's address in a `Link` header
//! (`rel="next"`, RFC 8288), as GitHub's API does. The cursor is the last item's id, so a page
//! is one index range scan whatever its depth, and items created meanwhile neither repeat nor
//! go missing.

use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The page size a request asks for, checked.
pub fn page_size(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::Unprocessable(format!(
            "limit: {n} is not a page size; give 1 to {MAX_PAGE_SIZE} (the default is {DEFAULT_PAGE_SIZE}) and follow the Link header's next page"
        ))),
    }
}

/// One page of a list, answered as its items with the paging headers.
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match the request's filters, on all pages.
    pub total: i64,
    /// The next page's address, when this page is full and more follow.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page from a query that fetched one item more than `limit`: that extra item says a next
    /// page exists; `cursor` is the query parameter that continues after the last item kept.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: i64,
        total: i64,
        uri: &axum::http::Uri,
        cursor: &str,
        last_id: impl Fn(&T) -> i64,
    ) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|last| next_link(uri, cursor, last_id(last)))
        } else {
            None
        };
        Page { items, total, next }
    }

    /// A page cut from a short list held in full (the platforms, servers, clients, tokens,
    /// or a site's backups), with the same cursor and headers as the long lists. The list is
    /// in ascending id order, or descending with `cursor` "before".
    pub fn from_list(
        all: Vec<T>,
        list: &ListQuery,
        uri: &axum::http::Uri,
        cursor: &str,
        id: impl Fn(&T) -> i64,
    ) -> ApiResult<Self> {
        let limit = page_size(list.limit)?;
        let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
        let position = if cursor == "before" {
            list.before
        } else {
            list.after
        };
        let rest: Vec<T> = match position {
            // The page starts behind the cursor, whether or not that item still exists.
            Some(c) if cursor == "before" => all.into_iter().filter(|t| id(t) < c).collect(),
            Some(c) => all.into_iter().filter(|t| id(t) > c).collect(),
            None => all,
        };
        let keep = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let items = rest.into_iter().take(keep).collect();
        Ok(Page::from_overfetch(items, limit, total, uri, cursor, id))
    }
}

/// The paging parameters of a short list.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Items per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The cursor of lists in id order: the last id of the previous page.
    pub after: Option<i64>,
    /// The cursor of lists newest first (backups): the last id of the previous page.
    pub before: Option<i64>,
}

/// The request's own address with its cursor replaced, so the next page keeps its filters.
fn next_link(uri: &axum::http::Uri, cursor: &str, last: i64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != cursor {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair(cursor, &last.to_string());
    format!("{}?{}", uri.path(), query.finish())
}

impl<T: serde::Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.total.to_string()) {
            headers.insert(HeaderName::from_static("x-total-count"), v);
        }
        if let Some(next) = self.next {
            if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
                headers.insert(axum::http::header::LINK, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(page_size(None).ok(), Some(100));
        assert_eq!(page_size(Some(1000)).ok(), Some(1000));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(1001)).is_err());
        assert!(page_size(Some(-5)).is_err());
    }

    #[test]
    fn the_next_link_keeps_the_filters() {
        let uri: axum::http::Uri = "/api/v1/sites?status=enabled&after=5&limit=2"
            .parse()
            .unwrap();
        let page = Page::from_overfetch(vec![6, 7, 8], 2, 10, &uri, "after", |i| *i);
        assert_eq!(page.items, vec![6, 7]);
        assert_eq!(
            page.next.as_deref(),
            Some("/api/v1/sites?status=enabled&limit=2&after=7")
        );
        let last = Page::from_overfetch(vec![9], 2, 10, &uri, "after", |i| *i);
        assert_eq!(last.next, None);
    }

    #[test]
    fn short_lists_page_the_same_way() {
        let uri: axum::http::Uri = "/api/v1/servers?limit=2".parse().unwrap();
        let all = vec![1, 3, 4, 9, 12];
        let q = |after| ListQuery {
            limit: Some(2),
            after,
            before: None,
        };
        let first = Page::from_list(all.clone(), &q(None), &uri, "after", |i| *i).unwrap();
        assert_eq!((first.items.clone(), first.total), (vec![1, 3], 5));
        assert!(first.next.as_deref().unwrap().ends_with("after=3"));
        let last = Page::from_list(all.clone(), &q(Some(4)), &uri, "after", |i| *i).unwrap();
        assert_eq!(last.items, vec![9, 12]);
        assert_eq!(last.next, None);
        // Descending, with a cursor whose item is gone.
        let down = ListQuery {
            limit: Some(2),
            after: None,
            before: Some(10),
        };
        let rev: Vec<i64> = all.into_iter().rev().collect();
        let page = Page::from_list(rev, &down, &uri, "before", |i| *i).unwrap();
        assert_eq!(page.items, vec![9, 4]);
        assert!(page.next.as_deref().unwrap().ends_with("before=4"));
    }
}
