//! Test guest: identity functions over every WIT type. Built with plain
//! wit-bindgen, no SDK, to prove the host handles any wasm32-wasip2 component.

wit_bindgen::generate!({ world: "types", path: "wit" });

use exports::test::types::roundtrip::{
    Color, Guest as Roundtrip, KebabCaseRecord, Perms, Point, Shape,
};

struct Types;

impl Guest for Types {
    fn add(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn checked(v: i32) -> Result<i32, String> {
        if v >= 0 {
            Ok(v)
        } else {
            Err("negative".to_string())
        }
    }

    fn nothing() {}
}

impl Roundtrip for Types {
    fn bools(v: bool) -> bool {
        v
    }
    fn s8s(v: i8) -> i8 {
        v
    }
    fn u8s(v: u8) -> u8 {
        v
    }
    fn s16s(v: i16) -> i16 {
        v
    }
    fn u16s(v: u16) -> u16 {
        v
    }
    fn s32s(v: i32) -> i32 {
        v
    }
    fn u32s(v: u32) -> u32 {
        v
    }
    fn s64s(v: i64) -> i64 {
        v
    }
    fn u64s(v: u64) -> u64 {
        v
    }
    fn f32s(v: f32) -> f32 {
        v
    }
    fn f64s(v: f64) -> f64 {
        v
    }
    fn chars(v: char) -> char {
        v
    }
    fn strings(v: String) -> String {
        v
    }
    fn points(v: Vec<Point>) -> Vec<Point> {
        v
    }
    fn tuples(v: (u8, String, bool)) -> (u8, String, bool) {
        v
    }
    fn colors(v: Color) -> Color {
        v
    }
    fn perms_of(v: Perms) -> Perms {
        v
    }
    fn shapes(v: Shape) -> Shape {
        v
    }
    fn options(v: Option<u32>) -> Option<u32> {
        v
    }
    fn nested_options(v: Option<Option<String>>) -> Option<Option<String>> {
        v
    }
    fn results(v: Vec<Result<u32, String>>) -> Vec<Result<u32, String>> {
        v
    }
    fn unit_results(v: Vec<Result<(), ()>>) -> Vec<Result<(), ()>> {
        v
    }
    fn kebab(v: KebabCaseRecord) -> KebabCaseRecord {
        v
    }
    fn nested_lists(v: Vec<Vec<i64>>) -> Vec<Vec<i64>> {
        v
    }

    fn many(count: u16, name: Option<String>, tags: Vec<String>) -> String {
        format!("{count}:{}:{}", name.unwrap_or_default(), tags.join(","))
    }
}

export!(Types);
