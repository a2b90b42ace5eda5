"""Default topic names shared by the nodes (relative names resolve inside the node namespace,
e.g. ``-r __ns:=/prism`` -> ``/prism/front/image_raw``). Pure constants, no ROS import.

Real-arm parameter files (``launch/config/*.yaml``) override them with the drivers' names.
"""

CAMERA_TOPIC = "{camera}/image_raw"
"""``sensor_msgs/Image`` per camera (sensor-data QoS)."""
JOINT_STATES = "/joint_states"
"""``sensor_msgs/JointState`` -- absolute, as robot drivers publish it."""
EE_POSE = "ee_pose"
"""``geometry_msgs/PoseStamped`` of the end effector (grip point) in the robot base frame."""
TWIST_COMMAND = "servo_node/delta_twist_cmds"
"""``geometry_msgs/TwistStamped`` Cartesian velocity commands (MoveIt Servo's input topic)."""
TRAJECTORY_COMMAND = "joint_trajectory_controller/joint_trajectory"
"""``trajectory_msgs/JointTrajectory`` for a joint trajectory controller."""
GRIPPER_COMMAND = "gripper_controller/commands"
"""``std_msgs/Float64MultiArray`` ``[g]``, g in [-1 open, +1 closed] (forward command controller)."""
ESTOP = "estop"
"""``std_msgs/Bool``: True engages (and latches) the e-stop."""
ESTOP_RESET = "estop_reset"
"""``std_msgs/Empty``: clears a latched e-stop / fault once the e-stop source reads False."""
EPISODE_START = "episode/start"
"""``std_msgs/String`` (latched): the task instruction of the episode that starts now."""
EPISODE_END = "episode/end"
"""``std_msgs/String``: ``success`` / ``failure`` / ``timeout`` / ``stopped`` when an episode ends."""
EPISODE_RESET = "episode/reset"
"""``std_msgs/Empty``: asks the twin to reset (start the next episode)."""
POLICY_STATUS = "policy/status"
"""``std_msgs/String`` JSON diagnostics of the policy node (verdict, reasons, latency)."""
REWARD_PROGRESS = "reward/progress"
"""``std_msgs/Float32``: the reward monitor's progress estimate Φ in [0, 1]."""
REWARD_SUCCESS = "reward/success"
"""``std_msgs/Bool``: the reward monitor's success estimate (Φ >= 1 - δ)."""

# -- sim-only (published by the MuJoCo twin; a real robot has none of these) -------------------
SIM_PRIVILEGED_STATE = "sim/privileged_state"
"""SIM-ONLY ``std_msgs/Float64MultiArray``: the env's full ``state`` observation (proprioception +
object/target state), for state-based policies and the scripted expert."""
SIM_MJ_STATE = "sim/mj_state"
"""SIM-ONLY ``std_msgs/Float64MultiArray``: ``[episode, seed, *mj_getState(INTEGRATION)]``, so the
scripted expert can mirror the twin exactly (the prefix ties the state to its episode)."""
SIM_EPISODE = "sim/episode"
"""SIM-ONLY ``std_msgs/String`` JSON (latched): ``{task, seed, instruction, episode}``."""
SIM_PROGRESS = "sim/progress"
"""SIM-ONLY ``std_msgs/Float32``: ground-truth task progress (for the ``oracle`` reward model)."""
SIM_SUCCESS = "sim/success"
"""SIM-ONLY ``std_msgs/Bool``: ground-truth success predicate."""
