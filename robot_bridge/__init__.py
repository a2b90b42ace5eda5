"""ROS 2 bridge: MuJoCo twin, policy node with safety, live reward monitor and recorder.

Nodes (console scripts): ``prism-sim-robot`` (:mod:`robot_bridge.sim_robot`), ``prism-policy``
(:mod:`robot_bridge.policy_node`), ``prism-reward-monitor`` (:mod:`robot_bridge.reward_monitor`),
``prism-ros-record`` (:mod:`robot_bridge.recorder`). The safety rules live in ROS-free
:mod:`robot_bridge.safety`. rclpy is imported lazily (only when a node starts), so importing this
package works without ROS installed; see the README section "Deploy on ROS 2".
"""
