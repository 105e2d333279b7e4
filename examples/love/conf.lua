-- LÖVE 11.4. WAITHANDLES_LOVE_HEADLESS=1 runs without a window or audio (for tests, and
-- machines without a display): every module that needs a device is turned off.
function love.conf(t)
  t.version = "11.4"
  t.identity = "waithandles-example"
  t.window.title = "waithandles: shared save file"
  t.window.width, t.window.height = 520, 200
  if os.getenv("WAITHANDLES_LOVE_HEADLESS") == "1" then
    for _, m in ipairs({ "window", "graphics", "audio", "sound", "joystick", "video",
      "physics", "font", "image", "mouse", "keyboard", "touch" }) do
      t.modules[m] = false
    end
  end
end
