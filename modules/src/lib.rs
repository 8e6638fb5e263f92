pub mod file_template;

pub fn x() {}
