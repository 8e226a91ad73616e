//! Test guest with a resource in an exported signature; the host refuses it.

wit_bindgen::generate!({ world: "resourceful", path: "wit" });

use exports::test::resourceful::things::{Guest, GuestThing, Thing};

struct Resourceful;

struct MyThing(u32);

impl GuestThing for MyThing {
    fn new(n: u32) -> Self {
        MyThing(n)
    }

    fn value(&self) -> u32 {
        self.0
    }
}

impl Guest for Resourceful {
    type Thing = MyThing;

    fn make(n: u32) -> Thing {
        Thing::new(MyThing(n))
    }
}

export!(Resourceful);
