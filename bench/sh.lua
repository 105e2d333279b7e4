-- For the demos: the output of a shell command.
return function(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end
