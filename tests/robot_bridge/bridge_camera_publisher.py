"""A stand-alone camera driver for the bridge tests: publishes moving test-pattern frames.

python bridge_camera_publisher.py NAMESPACE CAMERA[,CAMERA...] RATE_HZ SIZE
"""

import sys

import numpy as np
import rclpy
from sensor_msgs.msg import Image

from robot_bridge.ros_utils import numpy_to_image, sensor_qos


def main() -> None:
    namespace, cameras, rate, size = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), int(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node("test_camera", namespace=namespace)
    pubs = {c: node.create_publisher(Image, f"{c}/image_raw", sensor_qos()) for c in cameras}
    frame = np.zeros((size, size, 3), np.uint8)
    tick = [0]

    def publish():
        tick[0] += 1
        frame[:] = (tick[0] * 5) % 255
        stamp = node.get_clock().now().to_msg()
        for cam, pub in pubs.items():
            pub.publish(numpy_to_image(frame, stamp, cam))

    node.create_timer(1.0 / rate, publish)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
