// placeholder until KilnONNX lands
