"""RoI heads: the box head and the mask / keypoint heads that run on its output."""
