fn main() {
    println!("keysmith");
}
