#!/usr/bin/env node
import '../dist/host-agent/ctl.js';
