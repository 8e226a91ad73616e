//! Test guest importing an interface no Attune host provides.

wit_bindgen::generate!({ world: "needy", path: "wit" });

struct Needy;

impl Guest for Needy {
    fn run() -> u32 {
        test::needy::elsewhere::fetch()
    }
}

export!(Needy);
