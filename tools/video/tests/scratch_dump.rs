use opencv::core::{Mat, Vec3b};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
#[test]
fn dump() {
    let path = std::env::var("DUMP_IN").unwrap();
    let idx: usize = std::env::var("DUMP_AT")
        .unwrap_or("0".into())
        .parse()
        .unwrap();
    let mut cap = VideoCapture::from_file(&path, videoio::CAP_FFMPEG).unwrap();
    let mut mat = Mat::default();
    for _ in 0..=idx {
        assert!(cap.read(&mut mat).unwrap());
    }
    let (w, h) = (mat.cols() as u32, mat.rows() as u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let p = mat.at_2d::<Vec3b>(y as i32, x as i32).unwrap();
        image::Rgb([p[2], p[1], p[0]])
    });
    img.save(std::env::var("DUMP_OUT").unwrap()).unwrap();
}
