#!/usr/bin/env node
import '../dist/host-agent/cli.js';
